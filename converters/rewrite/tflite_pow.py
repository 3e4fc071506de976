"""TFLite: POW by a constant exponent, which TFLite's quantizer has no int8 kernel for ("no int8
kernel for op POW"), written in ops it has.

- x ** 2 becomes MUL(x, x): the same value.
- x ** c for a constant c that is not a whole number becomes EXP(c * LOG(x)): for x > 0 the same
  value; for x = 0 LOG gives -inf and EXP(-inf) 0 (as 0 ** c for c > 0); for x < 0 both give
  no number (a negative base to a fractional power). BirdNET's learned magnitude scaling of its
  mel power spectrum is one (exponents 0.23 and 0.19). A whole exponent other than 2 is not
  rewritten (a negative base has a real power that the logarithm cannot give).
- (x * x) ** c, a square read by nothing else, becomes EXP(2c * LOG(ABS(x))): the same value
  for every x, and the square is not computed. For the int8 model it matters: a square in 8
  bits doubles the range in decibels the 256 levels must cover. Measured on BirdNET's mel
  spectrogram (6 of its clips): in int8, 90% and 96% of the bins of the squared spectrogram
  are 0 and the compressed one has a cosine of 0.75 and 0.64 to the float one; from the int8
  spectrogram itself (58% and 74% zeros) an exact |x| ** 2c has 0.94 and 0.91.

The artefact is validated against the original, unrewritten model.
"""

from converters.rewrite import rewrite
from converters.rewrite.tflite import QUANTIZER, _codes, _ops, _schema
from converters.rewrite.tflite_rfft import _Builder
from converters.tflite_objects import drop_unused_opcodes

FLOAT32 = 0


def _exponent(model, g, op):
    """The POW's constant float32 exponent as one number (every value equal), or None."""
    import numpy as np

    t = g.tensors[op.inputs[1]]
    data = model.buffers[t.buffer].data if t.buffer else None
    if t.type != FLOAT32 or data is None or len(data) == 0:
        return None
    value = np.frombuffer(bytes(data), np.float32)
    return float(value[0]) if np.all(value == value[0]) and np.isfinite(value[0]) else None


def _pows(model, fu):
    """[(op index, exponent)] of the main graph's float32 POWs this rewrite takes."""
    g = model.subgraphs[0]
    out = []
    for i, op in _ops(model, fu.schema_fb.BuiltinOperator.POW):
        c = _exponent(model, g, op)
        if c is not None and g.tensors[op.outputs[0]].type == FLOAT32 and (c == 2 or c != round(c)):
            out.append((i, c))
    return out


def _squares(g, names, codes):
    """{POW op index: x} for the POWs whose base is MUL(x, x) (no fused activation) that
    nothing else reads."""
    made = {int(t): i for i, op in enumerate(g.operators) for t in op.outputs}
    readers = {}
    for op in g.operators:
        for t in op.inputs:
            readers[int(t)] = readers.get(int(t), 0) + 1
    out = {}
    for i, op in enumerate(g.operators):
        base = int(op.inputs[0])
        m = g.operators[made[base]] if base in made else None
        if (names[codes[op.opcodeIndex]] == "POW" and m is not None and names[codes[m.opcodeIndex]] == "MUL"
                and int(m.inputs[0]) == int(m.inputs[1]) and readers.get(base) == 1
                and base not in {int(t) for t in g.outputs}
                and not (m.builtinOptions is not None and m.builtinOptions.fusedActivationFunction)):
            out[i] = int(m.inputs[0])
    return out


def rewrite_pow(model_bytes):
    """(new model bytes, number of POW rewritten)."""
    import numpy as np

    fu = _schema()
    model = fu.convert_bytearray_to_object(bytearray(model_bytes))
    found = dict(_pows(model, fu))
    if not found:
        return model_bytes, 0
    b = _Builder(fu, model)
    g, new_ops = b.g, []
    squares = _squares(g, b.names, _codes(model))
    squared_by = {int(g.operators[i].inputs[0]) for i in squares if i in found and found[i] != 2}
    for i, op in enumerate(g.operators):
        if any(int(t) in squared_by for t in op.outputs):
            continue            # the square, now |x| ** 2c
        if i not in found:
            new_ops.append(op)
            continue
        x, out, exponent = int(op.inputs[0]), int(op.outputs[0]), found[i]
        if exponent == 2:
            new_ops.append(b.binary("MUL", x, x, out))
            continue
        like = g.tensors[out]
        shape, base = [int(d) for d in like.shape], like.name.decode(errors="replace")
        if i in squares:        # (x * x) ** c = |x| ** 2c
            x, exponent = squares[i], 2 * exponent
            magnitude = b.tensor(base + "/abs", shape, like)
            new_ops.append(b.op("ABS", [x], [magnitude]))
            x = magnitude
        log, scaled = b.tensor(base + "/log", shape, like), b.tensor(base + "/log_scaled", shape, like)
        c = b.tensor(base + "/exponent", [], data=np.array(exponent, np.float32))
        new_ops += [b.op("LOG", [x], [log]), b.binary("MUL", log, c, scaled),
                    b.op("EXP", [scaled], [out], b.schema.ExpOptionsT(), b.schema.BuiltinOptions.ExpOptions)]
    g.operators = new_ops
    drop_unused_opcodes(model)
    return bytes(fu.convert_object_to_bytearray(model)), len(found)


@rewrite("tflite", "pow_by_constant", needed_by=(QUANTIZER,))
class PowByConstant:
    """POW by a constant becomes MUL (exponent 2) or EXP(c * LOG(x)) (a fractional one)."""

    describe = ("rewrote {n} POW by a constant into MUL or EXP(c * LOG), (x * x) ** c as |x| ** 2c, "
                "for TFLite's quantizer")
    pattern = "POW"

    @staticmethod
    def matches(model_bytes, options=None):
        fu = _schema()
        return len(_pows(fu.convert_bytearray_to_object(bytearray(model_bytes)), fu))

    @staticmethod
    def apply(model_bytes, options=None):
        return rewrite_pow(model_bytes)
