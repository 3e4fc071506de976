"""TFLite: ops TFLite's full-integer quantizer has no int8 kernel for, written in ops it has.

- DIV (the quantizer: "no int8 kernel for op DIV"): a division by a float32 constant with no
  zero becomes a MUL by the constant's reciprocal. A division by a computed tensor d becomes
  x * (d * r * r) with r = RSQRT(d * d): 1/|d| squared times d is 1/d for either sign (d = 0
  gives NaN where DIV gives inf: both are no number). BirdNET's input normalisation
  (x - min) / (max - min + 1e-6) is one. A DIV that is the last step of an L2 normalisation
  is left to the next rewrite.
- SQRT (no int8 kernel either) in an L2 normalisation over the last axis,
  x / SQRT(SUM(x * x)) (x * x also as ABS(x) * ABS(x) or SQUARE(x), the root reshaped or not;
  torch.norm writes ABS, MUL, SUM, SQRT, RESHAPE, DIV: Resemblyzer's embedding), becomes
  TFLite's L2_NORMALIZATION, which has an int8 kernel. Only that exact pattern: with an epsilon
  added (x / (norm + eps), x / max(norm, eps)) it is not matched. L2_NORMALIZATION divides by
  max(norm, 1e-6): the same for any norm of 1e-6 or more (below, the source divides by a
  nearly zero norm). The ops the pattern leaves unread are removed. (x * RSQRT(...) needs no
  rewrite: the quantizer has int8 RSQRT.)

The artefact is validated against the original, unrewritten model.
"""


from converters.rewrite import rewrite
from converters.rewrite.tflite import QUANTIZER, _codes, _ops, _schema
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


def _readers(g):
    out = {}
    for i, op in enumerate(g.operators):
        for t in op.inputs:
            if t >= 0:
                out.setdefault(int(t), []).append(i)
    return out


def _producers(g):
    return {int(t): i for i, op in enumerate(g.operators) for t in op.outputs}


# -- L2 normalisation ---------------------------------------------------------------------------
_MOVES = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE")


def _l2_patterns(model, names):
    """[(index of the final DIV, x tensor)] of the main graph's L2 normalisations over
    the last axis, as the module docstring says."""
    g, codes = model.subgraphs[0], _codes(model)
    made = _producers(g)

    def op_of(t, *kinds):
        i = made.get(int(t))
        return (i, g.operators[i]) if i is not None and names[codes[g.operators[i].opcodeIndex]] in kinds else (None, None)

    def through_moves(t):
        while True:
            i, op = op_of(t, *_MOVES)
            if op is None:
                return t
            t = int(op.inputs[0])

    def squared_of(t):
        """x when t is x*x (or |x|*|x|, SQUARE(x)), else None."""
        i, op = op_of(t, "MUL", "SQUARE")
        if op is None:
            return None
        if names[codes[op.opcodeIndex]] == "SQUARE":
            return int(op.inputs[0])
        a, b = int(op.inputs[0]), int(op.inputs[1])
        if a != b:
            return None
        _, absolute = op_of(a, "ABS")
        return int(absolute.inputs[0]) if absolute is not None else a

    def l2_of(t, x):
        """Whether t is SQRT(SUM(x*x)) over x's last axis."""
        _, r = op_of(through_moves(t), "SQRT")
        _, total = op_of(r.inputs[0], "SUM") if r is not None else (None, None)
        if total is None or squared_of(total.inputs[0]) != x:
            return False
        axes = _const(model, g.tensors[total.inputs[1]])
        rank = len(g.tensors[x].shape) if g.tensors[x].shape is not None else 0
        return axes is not None and axes.size == 1 and int(axes.reshape(-1)[0]) % max(rank, 1) == rank - 1

    found = []
    for i, op in enumerate(g.operators):
        if (names[codes[op.opcodeIndex]] == "DIV" and g.tensors[op.outputs[0]].type == FLOAT32
                and not (op.builtinOptions is not None and op.builtinOptions.fusedActivationFunction)
                and l2_of(int(op.inputs[1]), int(op.inputs[0]))):
            found.append((i, int(op.inputs[0])))
    return found


def rewrite_l2(model_bytes):
    """(new model bytes, number of L2 normalisations made L2_NORMALIZATION)."""
    fu = _schema()
    model = fu.convert_bytearray_to_object(bytearray(model_bytes))
    b = _Builder(fu, model)
    found = dict(_l2_patterns(model, b.names))
    if not found:
        return model_bytes, 0
    g = b.g
    for i, x in found.items():
        op = g.operators[i]
        g.operators[i] = b.op("L2_NORMALIZATION", [x], [int(op.outputs[0])], b.schema.L2NormOptionsT(),
                              b.schema.BuiltinOptions.L2NormOptions)
    _drop_dead(g)
    drop_unused_opcodes(model)
    return bytes(fu.convert_object_to_bytearray(model)), len(found)


def _drop_dead(g):
    """Remove the ops whose outputs nobody reads (and are no output of the graph)."""
    while True:
        read = {int(t) for op in g.operators for t in op.inputs} | {int(t) for t in g.outputs}
        keep = [op for op in g.operators if any(int(t) in read for t in op.outputs)]
        if len(keep) == len(g.operators):
            return
        g.operators = keep


@rewrite("tflite", "l2_normalization", needed_by=(QUANTIZER,))
class L2Normalization:
    """x / SQRT(SUM(x * x)) over the last axis becomes L2_NORMALIZATION."""

    describe = "rewrote {n} L2 normalisation(s) (SQRT, DIV) into L2_NORMALIZATION for TFLite's quantizer"
    pattern = "L2 normalisations written with SQRT"

    @staticmethod
    def matches(model_bytes, options=None):
        fu = _schema()
        model = fu.convert_bytearray_to_object(bytearray(model_bytes))
        return len(_l2_patterns(model, _names(fu)))

    @staticmethod
    def apply(model_bytes, options=None):
        return rewrite_l2(model_bytes)


def _names(fu):
    return {v: k for k, v in vars(fu.schema_fb.BuiltinOperator).items() if not k.startswith("_")}


# -- DIV ---------------------------------------------------------------------------------------
def _divs(model, fu):
    """The main graph's float32 DIVs, less those ending an L2 normalisation."""
    l2 = {i for i, _ in _l2_patterns(model, _names(fu))}
    return {i for i, op in _ops(model, fu.schema_fb.BuiltinOperator.DIV)
            if model.subgraphs[0].tensors[op.outputs[0]].type == FLOAT32 and i not in l2}


def rewrite_div(model_bytes):
    """(new model bytes, number of float32 DIV rewritten) in the main graph."""
    import numpy as np

    fu = _schema()
    model = fu.convert_bytearray_to_object(bytearray(model_bytes))
    found = _divs(model, fu)
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
        fu = _schema()
        return len(_divs(fu.convert_bytearray_to_object(bytearray(model_bytes)), fu))

    @staticmethod
    def apply(model_bytes, options=None):
        return rewrite_div(model_bytes)
