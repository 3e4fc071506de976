"""Classification on a TFLite interpreter: rank the output, take the top-k classes (dequantized)."""

from __future__ import annotations

import time
from collections import namedtuple
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError
from .preprocess import Preprocessor, input_spec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from _typeshed import StrPath

Class = namedtuple("Class", ["id", "score"])
Class.__doc__ = "One classification result: class id and score."


def top_k_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` largest values, largest first (ties: lower index first)."""
    n = values.size
    k = min(int(k), n)
    if k <= 0:
        return np.empty(0, np.intp)
    idx = np.argpartition(values, n - k)[n - k:] if k < n else np.arange(n)
    # lexsort's last key is primary: value ascending, then index descending; reversed, this
    # is value descending, index ascending. No negation: unsigned values would wrap.
    return idx[np.lexsort((-idx, values[idx]))[::-1]]


def top_k(scores: np.ndarray, k: int = 1, threshold: float = 0.0) -> list[Class]:
    """Classes with a score above `threshold`, best first, at most `k` of them."""
    return [Class(int(i), float(scores[i])) for i in top_k_indices(scores, k) if scores[i] > threshold]


def preprocessing_of(model_path: StrPath, mean: float | Sequence[float] | None = None,
                     std: float | Sequence[float] | None = None,
                     layout: str | None = None) -> tuple[Any, Any, str | None]:
    """(mean, std, layout) for a model: the given values, else its sidecar's, else 128/128."""
    from .sidecar import read_sidecar

    spec = read_sidecar(model_path).get("preprocessing") or {}
    return (mean or spec.get("mean", 128.0), std or spec.get("std", 128.0),
            layout or spec.get("layout"))


class Classifier:
    """One image-classification model on one interpreter: preprocess, invoke, top-k."""

    def __init__(self, interpreter: Any, mean: float | Sequence[float] = 128.0,
                 std: float | Sequence[float] = 128.0, layout: str | None = None) -> None:
        self.interpreter = interpreter
        inputs = interpreter.get_input_details()
        if len(inputs) != 1:
            raise InputError(f"classify takes models with one input; this one has {len(inputs)}")
        self.input_detail = inputs[0]
        self.output_detail = interpreter.get_output_details()[0]
        self.preprocess = Preprocessor(input_spec(self.input_detail, layout), mean, std)
        self.num_classes = int(np.prod(self.output_detail["shape"]))
        self._in = self.input_detail["index"]
        self._out = self.output_detail["index"]
        scale, zero_point = self.output_detail.get("quantization", (0.0, 0))
        integer = np.issubdtype(np.dtype(self.output_detail["dtype"]), np.integer)
        self._quant = (scale, zero_point) if integer and scale > 0 else None

    def set_input(self, tensor: np.ndarray) -> None:
        self.interpreter.set_tensor(self._in, tensor)

    def invoke(self) -> float:
        """Run the model once; returns the time it took in seconds."""
        start = time.perf_counter()
        self.interpreter.invoke()
        return time.perf_counter() - start

    def classes(self, k: int = 1, threshold: float = 0.0) -> list[Class]:
        out = self.interpreter.get_tensor(self._out).reshape(-1)
        # Rank the raw values (dequantization is monotonic, scale > 0), convert only the top k.
        top = (int(out.argmax()),) if k == 1 else top_k_indices(out, k).tolist()
        if self._quant:
            scale, zero_point = self._quant
            scores = [scale * (int(out[i]) - zero_point) for i in top]
        else:
            scores = [float(out[i]) for i in top]
        return [Class(i, s) for i, s in zip(top, scores) if s > threshold]

    def classify(self, hwc: np.ndarray, k: int = 1, threshold: float = 0.0) -> list[Class]:
        """Decoded HWC pixels -> top-k classes (one inference)."""
        interpreter = self.interpreter
        interpreter.set_tensor(self._in, self.preprocess(hwc))
        interpreter.invoke()
        return self.classes(k, threshold)


def class_vector_warning(interpreter: Any) -> str:
    """'' when the model's output is one class vector ([N] or [1, N]); else a warning saying
    that the class ids printed index a flattened output that holds no classes."""
    outs = interpreter.get_output_details()
    described = ", ".join(f"{d['name']}{list(int(x) for x in d['shape'])}" for d in outs)
    first = [int(x) for x in outs[0]["shape"]] if outs else []
    big = [x for x in first if x > 1]
    if len(outs) == 1 and len(big) <= 1:
        return ""
    return (f"the model has no class-vector output ({len(outs)} output(s): {described}); "
            "the ids below index its first output flattened, which may not be classes "
            "(a detector, landmark or segmentation model needs its own decoding)")
