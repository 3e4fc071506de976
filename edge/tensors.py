"""Tensors across the integer boundary: quantize, dequantize, and invoke a model on floats."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy.typing as npt


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> npt.NDArray[np.float32]:
    """Quantized integers to real numbers.

    Args:
      values: an integer array. scale, zero_point: the tensor's quantization.
    Returns:
      float32 array; int64 arithmetic avoids the overflow of uint8/int8 subtraction.
    """
    return (scale * (values.astype(np.int64) - zero_point)).astype(np.float32)


def quantize(values: npt.ArrayLike, scale: float, zero_point: int, dtype: npt.DTypeLike) -> np.ndarray:
    """Real numbers to a quantized integer `dtype`, rounded to nearest and clipped to its range."""
    info = np.iinfo(dtype)
    return np.clip(np.rint(np.asarray(values) / scale + zero_point), info.min, info.max).astype(dtype)


def _is_quantized(detail: dict[str, Any]) -> bool:
    scale, _ = detail.get("quantization", (0.0, 0))
    return np.issubdtype(np.dtype(detail["dtype"]), np.integer) and scale > 0


def invoke_float(interpreter: Any, *inputs: npt.ArrayLike) -> list[npt.NDArray[np.float32]]:
    """Run an allocated TFLite interpreter on float arrays; returns its outputs as floats.

    Integer inputs are quantized with their own scale and zero point, integer outputs
    dequantized, so a float model and its int8 twin are called the same way.
    """
    for detail, x in zip(interpreter.get_input_details(), inputs):
        if _is_quantized(detail):
            scale, zero_point = detail["quantization"]
            x = quantize(x, scale, zero_point, detail["dtype"])
        interpreter.set_tensor(detail["index"], np.asarray(x, dtype=detail["dtype"]))
    interpreter.invoke()
    outs = []
    for detail in interpreter.get_output_details():
        y = interpreter.get_tensor(detail["index"])
        outs.append(dequantize(y, *detail["quantization"]) if _is_quantized(detail)
                    else y.astype(np.float32, copy=False))
    return outs


def rescale_problem(record: object) -> str | None:
    """What is wrong with a sidecar's `output_rescale` record, or None when it fits:
    [{"output": int, "axis": int, "parts": [[start, stop, factor], ...]}, ...]."""
    if not isinstance(record, list):
        return "'output_rescale' is not a list"
    for entry in record:
        if not isinstance(entry, dict):
            return "'output_rescale' holds a non-object"
        for key in ("output", "axis"):
            if not isinstance(entry.get(key), int) or isinstance(entry.get(key), bool) or entry[key] < 0:
                return f"'output_rescale.{key}' is not a non-negative number"
        parts = entry.get("parts")
        def number(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if not isinstance(parts, list) or not all(
                isinstance(p, list) and len(p) == 3 and all(number(v) for v in p)
                and 0 <= p[0] < p[1] and p[2] > 0 for p in parts):
            return "'output_rescale.parts' is not a list of [start, stop, factor]"
    return None


def undo_output_rescale(outputs: Iterable[Any], record: Iterable[dict[str, Any]] | None) -> list[Any]:
    """Outputs (a list, in the model's order) with the slices a packed-output rewrite divided
    (converters/quantize/packed_outputs.py, the sidecar's `output_rescale`) multiplied back,
    so they are in the source model's units. Float copies; untouched outputs are returned as
    they are."""
    outputs = list(outputs)
    for entry in record or ():
        i, axis = entry["output"], entry["axis"]
        if i >= len(outputs) or axis >= np.ndim(outputs[i]):
            continue
        y = np.array(outputs[i], dtype=np.float32)
        view = np.moveaxis(y, axis, 0)
        for start, stop, factor in entry["parts"]:
            view[int(start):int(stop)] *= np.float32(factor)
        outputs[i] = y
    return outputs
