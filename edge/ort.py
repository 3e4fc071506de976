"""The one place an ONNX Runtime session is made, and the one ONNX/NumPy dtype table.

    s = ort_session("model.onnx", threads=1, optimize=False)   # an onnxruntime.InferenceSession
    ort_dtype("tensor(float16)")   # -> dtype('float16'), what a session's input.type maps to
    onnx_dtype(10)                 # -> dtype('float16'), what an ONNX TensorProto elem_type maps to

onnxruntime is imported inside `ort_session` (edge.errors.require names the pip extra); the
dtype table is plain NumPy, so the device side (edge.bench) and the converters share it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import require

if TYPE_CHECKING:
    from _typeshed import StrPath

PROVIDERS = ("CPUExecutionProvider",)

# (ONNX TensorProto elem_type, ONNX Runtime's type name, NumPy dtype): the one table
_TYPES = (
    (1, "float", np.float32), (2, "uint8", np.uint8), (3, "int8", np.int8),
    (4, "uint16", np.uint16), (5, "int16", np.int16), (6, "int32", np.int32),
    (7, "int64", np.int64), (9, "bool", np.bool_), (10, "float16", np.float16),
    (11, "double", np.float64), (12, "uint32", np.uint32), (13, "uint64", np.uint64),
    (14, "complex64", np.complex64), (15, "complex128", np.complex128),
)
ONNX_TO_NUMPY: dict[int, np.dtype] = {e: np.dtype(t) for e, _, t in _TYPES}
ORT_TO_NUMPY: dict[str, np.dtype] = {f"tensor({n})": np.dtype(t) for _, n, t in _TYPES}


def ort_dtype(type_name: str, default: Any = np.float32) -> np.dtype:
    """The NumPy dtype of an ONNX Runtime type name ('tensor(float)'); `default` for others."""
    found = ORT_TO_NUMPY.get(type_name)
    return found if found is not None else np.dtype(default)


def onnx_dtype(elem_type: int) -> np.dtype:
    """The NumPy dtype of an ONNX TensorProto element type; KeyError for one without."""
    return ONNX_TO_NUMPY[int(elem_type)]


def ort_session(path: StrPath | bytes, *, threads: int | None = None, inter_threads: int | None = None,
                optimize: bool = True, log_level: int | None = 4,
                what: str = "running ONNX/ORT models") -> Any:
    """An onnxruntime.InferenceSession of the model at `path` (or of a serialized model's
    bytes) on the CPU.

    threads: intra-op threads (None: onnxruntime's default); inter_threads: inter-op threads;
    optimize=False: no graph optimization (the model's own arithmetic, as the noise floor
    needs); log_level: onnxruntime's log severity (4: its errors reach us as exceptions, one
    line each; None: its default). Load errors are onnxruntime's own exceptions."""
    ort = require("onnxruntime", "convert", what)
    opts = ort.SessionOptions()
    if log_level is not None:
        opts.log_severity_level = log_level
    if threads:
        opts.intra_op_num_threads = int(threads)
    if inter_threads:
        opts.inter_op_num_threads = int(inter_threads)
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(os.fspath(path), sess_options=opts, providers=list(PROVIDERS))
