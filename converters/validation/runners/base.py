"""The runner every runtime implements: activate, input metadata, infer, deactivate.

As in Polygraphy, a runner is built cheaply (the session is loaded in `activate`), `infer`
takes {input name: array} and returns an OrderedDict {output name: array} (quantized
outputs already dequantized), and times itself.
"""

import time
from collections import OrderedDict, namedtuple

import numpy as np

from edge.preprocess import guess_layout
from edge.tensors import dequantize  # noqa: F401  (re-exported for runners)

TensorMeta = namedtuple("TensorMeta", "name shape dtype scale zero_point layout")
TensorMeta.__doc__ = ("One input or output: shape (None for unknown dims), numpy dtype, "
                      "quantization (scale 0 when none) and layout guess (NHWC, NCHW or None).")


def tensor_meta(name, shape, dtype, scale=0.0, zero_point=0, layout=None):
    shape = tuple(None if d is None or (isinstance(d, (int, np.integer)) and d < 0) or
                  not isinstance(d, (int, np.integer)) else int(d) for d in shape)
    if layout is None:
        known = tuple(1 if d is None else d for d in shape)
        layout = guess_layout(known)
    return TensorMeta(str(name), shape, np.dtype(dtype), float(scale or 0.0), int(zero_point or 0),
                      layout)


class Runner:
    """Base class. Subclasses set `format`, and implement _activate, input_metadata, _infer."""

    format = None
    precision = "float"          # "float" or "reduced" (int8, float16 weights, Edge TPU)
    synthetic_names = False      # True when the runtime has no real tensor names (PyTorch)
    numbers = True               # False when the runner can only check structure (Core ML on Linux)

    def __init__(self, path, metadata=None):
        self.path = str(path)
        self.metadata = metadata or {}
        self.is_active = False
        self.inference_times = []
        self.info = {}

    @property
    def name(self):
        import os

        return f"{self.format}:{os.path.basename(self.path.rstrip('/'))}"

    # -- lifecycle ------------------------------------------------------------------------
    def activate(self):
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self):
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self):
        return self.activate()

    def __exit__(self, *exc):
        self.deactivate()

    def _activate(self):
        raise NotImplementedError

    def _deactivate(self):
        pass

    # -- I/O ------------------------------------------------------------------------------
    def input_metadata(self):
        """[TensorMeta] of the inputs, in the model's order."""
        raise NotImplementedError

    def output_metadata(self):
        """[TensorMeta] of the outputs when known without running, else None."""
        return None

    def dim_names(self):
        """{input name: [symbolic name or None per dimension]} (ONNX dim_param), or {}."""
        return {}

    def infer(self, feed):
        """{input name: array} -> OrderedDict {output name: float or int array}."""
        start = time.perf_counter()
        out = self._infer(feed)
        self.inference_times.append(time.perf_counter() - start)
        record = self.metadata.get("output_rescale")
        if record:   # a packed output normalized for int8: back in the source's units
            from edge.tensors import undo_output_rescale

            out = OrderedDict(zip(out.keys(), undo_output_rescale(list(out.values()), record)))
        return OrderedDict((k, np.asarray(v)) for k, v in out.items())

    def _infer(self, feed):
        raise NotImplementedError

    def describe(self):
        return {"runner": self.name, "format": self.format, "precision": self.precision,
                **self.info}
