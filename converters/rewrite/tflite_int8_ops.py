"""TFLite: ops TFLite's full-integer quantizer has no int8 kernel for, written in ops it has.

- DIV (the quantizer: "no int8 kernel for op DIV"): a division by a float32 constant with no
  zero becomes a MUL by the constant's reciprocal. A division by a computed tensor d becomes
  x * (d * r * r) with r = RSQRT(d * d): 1/|d| squared times d is 1/d for either sign (d = 0
  gives NaN where DIV gives inf: both are no number). BirdNET's input normalisation
  (x - min) / (max - min + 1e-6) is one.

The artefact is validated against the original, unrewritten model.
"""


from converters.rewrite import rewrite
from converters.rewrite.tflite import QUANTIZER, _ops, _schema, count_ops
from converters.rewrite.tflite_rfft import _Builder
from converters.tflite_objects import drop_unused_opcodes

FLOAT32 = 0


def _const(model, tensor):
    """The constant's numpy value, or None when the tensor is computed."""
    import numpy as np

    data = model.buffers[tensor.buffer].data if tensor.buffer else None
    if data is None or len(data) == 0:
        return None
    dtype = {0: np.float32, 2: np.int32, 6: np.bool_, 4: np.int64}.get(tensor.type)
    if dtype is None:
        return None
    shape = [int(d) for d in tensor.shape] if tensor.shape is not None else []
    return np.frombuffer(bytes(data), dtype).reshape(shape)


# -- DIV ---------------------------------------------------------------------------------------
def rewrite_div(model_bytes):
    """(new model bytes, number of float32 DIV rewritten) in the main graph."""
    import numpy as np

    fu = _schema()
    model = fu.convert_bytearray_to_object(bytearray(model_bytes))
    found = {i for i, op in _ops(model, fu.schema_fb.BuiltinOperator.DIV)
             if model.subgraphs[0].tensors[op.outputs[0]].type == FLOAT32}
    if not found:
        return model_bytes, 0
    b = _Builder(fu, model)
    g, new_ops = b.g, []
    for i, op in enumerate(g.operators):
        if i not in found:
            new_ops.append(op)
            continue
        x, d, out = int(op.inputs[0]), int(op.inputs[1]), int(op.outputs[0])
        dt = g.tensors[d]
        base = g.tensors[out].name.decode(errors="replace")
        shape = [int(s) for s in dt.shape] if dt.shape is not None else []
        value = _const(model, dt)
        if value is not None and value.dtype == np.float32 and np.all(value != 0):
            inverse = b.tensor(base + "/reciprocal", shape, data=(1.0 / value.astype(np.float64)).astype(np.float32))
        else:
            square, r = b.tensor(base + "/divisor_squared", shape, dt), b.tensor(base + "/rsqrt", shape, dt)
            r2, inverse = b.tensor(base + "/rsqrt_squared", shape, dt), b.tensor(base + "/reciprocal", shape, dt)
            new_ops += [b.binary("MUL", d, d, square), b.op("RSQRT", [square], [r]),
                        b.binary("MUL", r, r, r2), b.binary("MUL", d, r2, inverse)]
        mul = b.binary("MUL", x, inverse, out)
        if op.builtinOptions is not None:
            mul.builtinOptions.fusedActivationFunction = op.builtinOptions.fusedActivationFunction
        new_ops.append(mul)
    g.operators = new_ops
    drop_unused_opcodes(model)
    return bytes(fu.convert_object_to_bytearray(model)), len(found)


@rewrite("tflite", "div_as_mul", needed_by=(QUANTIZER,))
class DivAsMul:
    """DIV becomes MUL by the divisor's reciprocal (a constant, or computed with RSQRT)."""

    describe = "rewrote {n} DIV into MUL by the divisor's reciprocal for TFLite's quantizer"
    pattern = "DIV"

    @staticmethod
    def matches(model_bytes, options=None):
        return count_ops(model_bytes, "DIV")

    @staticmethod
    def apply(model_bytes, options=None):
        return rewrite_div(model_bytes)
