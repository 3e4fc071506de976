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
- IF (the quantizer: "no int8 kernel for op IF"): an IF whose branches only compute (no
  state, no nested control flow) is inlined into the main graph. With a constant condition
  only the taken branch is; otherwise both are and a SELECT on the condition picks each
  output (both branches then run on every call; the result is the IF's). SELECT, not
  SELECT_V2 or a CAST of the condition: the quantizer has int8 SELECT only, which takes a
  condition of the outputs' shape or one value per row; a one-value condition is reshaped
  to that, an output of several rows chosen by one value is refused by name. That SELECT
  copies the chosen int8 values without rescaling: only outputs both branches end in ops of
  one fixed int8 scale (LOGISTIC, SOFTMAX, TANH) are chosen so; others are refused by name.
  openWakeWord's "hey jarvis" runs its second stage only when its first stage's score is 0.5
  or more; both stages end in a sigmoid.
- MINIMUM(x, +inf) and MAXIMUM(x, -inf) (the open side of tf.clip_by_value(x, lo, inf)) are
  x itself and are removed when their infinite constant is shared by several ops. Measured
  on openWakeWord's melspectrogram: its two clips share one +inf constant, which TFLite's
  quantizer gives a scale of inf (with requantize ops), and ai-edge-litert's XNNPack kernels
  die (SIGSEGV) running that int8 model (the builtin kernels run it, on garbage). A constant
  read by one clip is scaled finitely and is left alone (no rewrite the tool does not need).

The artefact is validated against the original, unrewritten model.
"""

import copy

from converters.rewrite import rewrite
from converters.rewrite.tflite import (
    QUANTIZER,
    _codes,
    _ops,
    _schema,
    builtin_names,
    count_ops,
    unread_dropped,
)
from converters.rewrite.tflite_rfft import _Builder
from converters.tflite_objects import drop_unused_opcodes

FLOAT32 = 0
# ops a branch must not hold to be inlined: state, or control flow of its own
_NOT_INLINED = ("IF", "WHILE", "CALL_ONCE", "CALL", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE")


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
    g.operators = unread_dropped(g.operators, g.outputs)
    drop_unused_opcodes(model)
    return bytes(fu.convert_object_to_bytearray(model)), len(found)


@rewrite("tflite", "l2_normalization", needed_by=(QUANTIZER,))
class L2Normalization:
    """x / SQRT(SUM(x * x)) over the last axis becomes L2_NORMALIZATION."""

    describe = "rewrote {n} L2 normalisation(s) (SQRT, DIV) into L2_NORMALIZATION for TFLite's quantizer"
    pattern = "L2 normalisations written with SQRT"

    @staticmethod
    def matches(model_bytes, options=None):
        fu = _schema()
        model = fu.convert_bytearray_to_object(bytearray(model_bytes))
        return len(_l2_patterns(model, builtin_names(fu.schema_fb)))

    @staticmethod
    def apply(model_bytes, options=None):
        return rewrite_l2(model_bytes)


# -- DIV ---------------------------------------------------------------------------------------
def _divs(model, fu):
    """The main graph's float32 DIVs, less those ending an L2 normalisation."""
    l2 = {i for i, _ in _l2_patterns(model, builtin_names(fu.schema_fb))}
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


# -- IF ----------------------------------------------------------------------------------------
def _branch_refusal(model, names, index):
    """Why branch subgraph `index` cannot be inlined, or None."""
    codes = _codes(model)
    for op in model.subgraphs[index].operators:
        name = names[codes[op.opcodeIndex]]
        if name in _NOT_INLINED or name == "CUSTOM":
            return f"its branch {index} holds {name}"
    return None


def _inline(b, branch, args, outs_to):
    """The branch subgraph's ops copied into the main graph: its inputs read `args`, its
    tensors copied (constants keep their buffers), each output written into `outs_to[k]`
    when given (else a fresh tensor). Returns (ops, [main tensor of each branch output])."""
    g, sub = b.g, b.model.subgraphs[branch]
    remap = {int(t): int(a) for t, a in zip(sub.inputs, args)}
    for k, t in enumerate(sub.outputs):
        t = int(t)
        if t not in remap and outs_to[k] is not None:
            remap[t] = outs_to[k]
    ops = []
    for op in sub.operators:
        for t in list(op.inputs) + list(op.outputs):
            t = int(t)
            if t >= 0 and t not in remap:
                c = copy.deepcopy(sub.tensors[t])
                c.name = f"inlined_{branch}/".encode() + c.name
                g.tensors.append(c)
                remap[t] = len(g.tensors) - 1
        o = copy.deepcopy(op)
        o.inputs = [remap[int(t)] if t >= 0 else -1 for t in op.inputs]
        o.outputs = [remap[int(t)] for t in op.outputs]
        ops.append(o)
    result = [remap[int(t)] for t in sub.outputs]
    return ops, result


def _copy_op(b, src, dst):
    """An op writing tensor `src`'s value into `dst` (a RESHAPE to its own shape)."""
    import numpy as np

    shape = np.array([int(d) for d in b.g.tensors[dst].shape], np.int32)
    s = b.tensor(b.g.tensors[dst].name.decode(errors="replace") + "/shape", [len(shape)], data=shape)
    opts = b.schema.ReshapeOptionsT()
    opts.newShape = list(shape)
    return b.op("RESHAPE", [src, s], [dst], opts, b.schema.BuiltinOptions.ReshapeOptions)


# ops whose int8 output has a fixed scale and zero point, whatever the calibration saw
_FIXED_SCALE = {"LOGISTIC": "1/256", "SOFTMAX": "1/256", "TANH": "1/128"}


def _same_fixed_scale(b, op):
    """Raise unless each output of the IF `op` comes, in both branches, from ops of one fixed
    int8 scale (_FIXED_SCALE): TFLite's int8 SELECT copies the chosen input's int8 values as
    they are, without rescaling, so its inputs and output must share their scale, which only a
    fixed-scale op guarantees (openWakeWord's two sigmoid scores do)."""
    codes, names = _codes(b.model), b.names
    main = _producers(b.g)

    def kind(branch, k):
        sub = b.model.subgraphs[branch]
        t = int(sub.outputs[k])
        inputs = [int(i) for i in sub.inputs]
        if t in inputs:         # passed through: what makes the IF's own input
            i = main.get(int(op.inputs[1 + inputs.index(t)]))
            return "the model's input" if i is None else names[codes[b.g.operators[i].opcodeIndex]]
        i = _producers(sub).get(t)
        return "a constant" if i is None else names[codes[sub.operators[i].opcodeIndex]]

    opts = op.builtinOptions
    for k, out in enumerate(op.outputs):
        kinds = {kind(opts.thenSubgraphIndex, k), kind(opts.elseSubgraphIndex, k)}
        scales = {_FIXED_SCALE.get(x) for x in kinds}
        if len(scales) != 1 or None in scales:
            raise RuntimeError(
                f"IF output {b.g.tensors[out].name.decode(errors='replace')!r} depends on the input's "
                f"values and its branches end in {' and '.join(sorted(str(x) for x in kinds))}: TFLite's "
                "int8 SELECT copies the chosen branch's int8 values without rescaling, so only branches "
                "ending in ops of one fixed int8 scale (LOGISTIC, SOFTMAX; TANH) can be chosen by it")


def _select_condition(b, cond, out):
    """(condition tensor SELECT takes for output `out`, [the RESHAPE making it]): the condition
    itself when of the output's shape, else its one value reshaped to [] (a scalar output)
    or [1] (one value for the output's one row); raise otherwise."""
    import numpy as np

    g = b.g
    c_shape = [int(d) for d in g.tensors[cond].shape] if g.tensors[cond].shape is not None else []
    o_shape = [int(d) for d in g.tensors[out].shape] if g.tensors[out].shape is not None else []
    if c_shape == o_shape:
        return cond, []
    if int(np.prod(c_shape)) != 1 or (o_shape and o_shape[0] != 1):
        raise RuntimeError(f"IF output {g.tensors[out].name.decode(errors='replace')!r} of shape {o_shape} "
                           f"chosen by a condition of shape {c_shape}: TFLite's int8 SELECT takes a "
                           "condition of the output's shape or one value per row")
    target = [] if not o_shape else [1]
    name = g.tensors[cond].name.decode(errors="replace") + f"/as_{len(target)}d"
    t = b.tensor(name, target, g.tensors[cond])
    g.tensors[t].type, g.tensors[t].shapeSignature = g.tensors[cond].type, None
    shape = b.tensor(name + "/shape", [len(target)], data=np.array(target, np.int32))
    opts = b.schema.ReshapeOptionsT()
    opts.newShape = list(target)
    return t, [b.op("RESHAPE", [cond, shape], [t], opts, b.schema.BuiltinOptions.ReshapeOptions)]


def _plan_if(model, names):
    """[(op index, op, condition value or None)] of the main graph's IFs, or raise naming why
    one cannot be inlined."""
    g = model.subgraphs[0]
    out = []
    for i, op in _ops(model, _schema().schema_fb.BuiltinOperator.IF):
        opts = op.builtinOptions
        for branch in (opts.thenSubgraphIndex, opts.elseSubgraphIndex):
            why = _branch_refusal(model, names, branch)
            if why:
                raise RuntimeError(f"IF {g.tensors[op.outputs[0]].name.decode(errors='replace')!r} "
                                   f"cannot be inlined: {why}")
        cond = _const(model, g.tensors[op.inputs[0]])
        out.append((i, op, None if cond is None else bool(cond.reshape(-1)[0])))
    return out


def rewrite_if(model_bytes):
    """(new model bytes, number of IF inlined) in the main graph."""
    fu = _schema()
    model = fu.convert_bytearray_to_object(bytearray(model_bytes))
    b = _Builder(fu, model)
    found = _plan_if(model, b.names)
    if not found:
        return model_bytes, 0
    g, at = b.g, {i: (op, cond) for i, op, cond in found}
    new_ops = []
    for i, op in enumerate(g.operators):
        if i not in at:
            new_ops.append(op)
            continue
        opts, cond = op.builtinOptions, at[i][1]
        args, outs = [int(t) for t in op.inputs[1:]], [int(t) for t in op.outputs]
        if cond is not None:
            branch = opts.thenSubgraphIndex if cond else opts.elseSubgraphIndex
            ops, results = _inline(b, branch, args, outs)
            new_ops += ops
            new_ops += [_copy_op(b, r, o) for r, o in zip(results, outs) if r != o]
            continue
        _same_fixed_scale(b, op)
        then_ops, then_out = _inline(b, opts.thenSubgraphIndex, args, [None] * len(outs))
        else_ops, else_out = _inline(b, opts.elseSubgraphIndex, args, [None] * len(outs))
        new_ops += then_ops + else_ops
        for t, e, o in zip(then_out, else_out, outs):
            cond, reshape = _select_condition(b, int(op.inputs[0]), o)
            new_ops += reshape
            new_ops.append(b.op("SELECT", [cond, t, e], [o], b.schema.SelectOptionsT(),
                                b.schema.BuiltinOptions.SelectOptions))
    g.operators = new_ops
    _drop_unused_subgraphs(model, b.names)
    drop_unused_opcodes(model)
    return bytes(fu.convert_object_to_bytearray(model)), len(found)


def _drop_unused_subgraphs(model, names):
    """Remove the branch subgraphs when no control-flow op remains to call them."""
    codes = _codes(model)
    if any(names[codes[op.opcodeIndex]] in ("IF", "WHILE", "CALL_ONCE", "CALL")
           for g in model.subgraphs[:1] for op in g.operators):
        return
    for g in model.subgraphs[1:]:
        if any(names[codes[op.opcodeIndex]] in ("IF", "WHILE", "CALL_ONCE", "CALL") for op in g.operators):
            return
    model.subgraphs = model.subgraphs[:1]


@rewrite("tflite", "if_inlined", needed_by=(QUANTIZER,))
class IfInlined:
    """IF becomes its branches inlined (the taken one if the condition is constant, else both
    and a SELECT)."""

    describe = "inlined {n} IF (its branches, chosen by SELECT unless constant) for TFLite's quantizer"
    pattern = "IF"

    @staticmethod
    def matches(model_bytes, options=None):
        return count_ops(model_bytes, "IF")

    @staticmethod
    def apply(model_bytes, options=None):
        from edge.errors import EdgeportError

        try:
            return rewrite_if(model_bytes)
        except RuntimeError as e:     # the reason no inlining can address, in one line
            raise EdgeportError(f"TFLite's quantizer has no int8 kernel for op IF, and {e}",
                                "keep the float TFLite, or quantize a model without control flow") from None


# -- a clip by an infinite bound -------------------------------------------------------------------
def _infinite_clips(model, names):
    """[(op index, x)] of the main graph's MINIMUM(x, +inf) and MAXIMUM(x, -inf) (a constant
    bound, every value infinite, no larger than x, read by more than one op: the quantizer
    scales an unshared one finitely), whose output is no output of the graph."""
    import numpy as np

    g, codes = model.subgraphs[0], _codes(model)
    outputs = {int(t) for t in g.outputs}
    readers = _readers(g)
    found = []
    for i, op in enumerate(g.operators):
        name = names[codes[op.opcodeIndex]]
        if name not in ("MINIMUM", "MAXIMUM") or len(op.inputs) != 2 or int(op.outputs[0]) in outputs:
            continue
        for x, bound in ((int(op.inputs[0]), int(op.inputs[1])), (int(op.inputs[1]), int(op.inputs[0]))):
            value = _const(model, g.tensors[bound])
            same = (g.tensors[x].shape is not None and g.tensors[op.outputs[0]].shape is not None
                    and list(g.tensors[x].shape) == list(g.tensors[op.outputs[0]].shape))
            if value is not None and value.dtype == np.float32 and value.size and same and len(
                    readers.get(bound, [])) > 1 and np.all(
                    value == (np.inf if name == "MINIMUM" else -np.inf)):
                found.append((i, x))
                break
    return found


def rewrite_infinite_clips(model_bytes):
    """(new model bytes, number of MINIMUM/MAXIMUM by an infinite bound removed)."""
    fu = _schema()
    model = fu.convert_bytearray_to_object(bytearray(model_bytes))
    found = _infinite_clips(model, builtin_names(fu.schema_fb))
    if not found:
        return model_bytes, 0
    g = model.subgraphs[0]
    same = {int(g.operators[i].outputs[0]): x for i, x in found}
    drop = {i for i, _ in found}

    def source(t):          # through a chain of removed clips
        while t in same:
            t = same[t]
        return t

    for op in g.operators:
        op.inputs = [source(int(t)) if t >= 0 else -1 for t in op.inputs]
    g.operators = [op for i, op in enumerate(g.operators) if i not in drop]
    drop_unused_opcodes(model)
    return bytes(fu.convert_object_to_bytearray(model)), len(found)


@rewrite("tflite", "infinite_clip", needed_by=(QUANTIZER,))
class InfiniteClip:
    """MINIMUM(x, +inf) and MAXIMUM(x, -inf), the open side of tf.clip_by_value(x, lo, inf),
    are x itself: removed. TFLite's quantizer gives the infinite constant an infinite scale,
    and the int8 model crashes the runtime."""

    describe = "removed {n} clip(s) by an infinite bound (MINIMUM/MAXIMUM with inf) for TFLite's quantizer"
    pattern = "clips by an infinite bound"

    @staticmethod
    def matches(model_bytes, options=None):
        fu = _schema()
        return len(_infinite_clips(fu.convert_bytearray_to_object(bytearray(model_bytes)), builtin_names(fu.schema_fb)))

    @staticmethod
    def apply(model_bytes, options=None):
        return rewrite_infinite_clips(model_bytes)
