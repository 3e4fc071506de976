"""The one random-input generator: seeded values for a model's inputs when no data is given.

    rng = generator(seed)                                  # the one seeded source
    random_values(rng, (1, 16000), "float32", -1.0, 1.0)   # --val-range NAME:[-1,1]
    random_values(rng, (1, 8), "int64")                    # integers 0..9, floats [0, 1)
    random_pixels(rng, 224, 224, 3)                        # an image: uint8 0..255
    random_normal(rng, (1, 3), "float32")                  # standard normal floats (bench)

Validation (converters/validation/data.py), `bench` (edge/bench.py and its --val-range feeder
in converters/validation/signature.py) and PyTorch's example inputs (converters/routes/torch.py)
all draw from here, so one seed gives the same inputs wherever they are made: the saved
outputs of `validate --save-outputs` are matched to them by fingerprint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt


def generator(seed: int | None = 0) -> np.random.Generator:
    """The seeded generator every synthesised input comes from."""
    return np.random.default_rng(seed)


def random_values(rng: np.random.Generator, shape: Sequence[int], dtype: npt.DTypeLike,
                  lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """A random array of `dtype` in [lo, hi] (the --val-range contract; inclusive for integers,
    whose bounds are floored and clipped to the dtype); defaults by dtype: bool 0/1,
    integers 0..9, floats [0, 1)."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        first = int(max(info.min, np.floor(lo))) if lo is not None else 0
        last = int(min(info.max, np.floor(hi))) if hi is not None else 9
        return rng.integers(first, last + 1, size=shape).astype(dt)
    return rng.uniform(0.0 if lo is None else lo, 1.0 if hi is None else hi, size=shape).astype(dt)


def random_pixels(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """A random HWC uint8 image (every value 0..255)."""
    return rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)


def random_normal(rng: np.random.Generator, shape: Sequence[int], dtype: npt.DTypeLike) -> np.ndarray:
    """Standard normal values of a float `dtype`."""
    return rng.standard_normal(size=shape).astype(dtype)
