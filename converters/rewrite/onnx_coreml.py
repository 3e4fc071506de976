"""Rewrites that get an ONNX graph past the ops onnx2coreml has no Core ML lowering for.

- fold_constants: every node whose inputs are all constants (initializers, Constant nodes,
  the Shape of a tensor whose shape is static once the inputs have the fixed shapes the
  route gives them) becomes its value, to a fixed point, and an `If` whose condition became
  constant is replaced by its taken branch (converters/rewrite/onnx.py `fold`, which the
  pinned-input rewrite uses too). Exporters compute shapes and index ranges at run time
  (a YOLOv8 head's `Range` over its grid), and tf2onnx keeps an int8 model's weights behind
  `DequantizeLinear`: once folded, they are constants.
- qdq_as_float: the QuantizeLinear / DequantizeLinear left on activations (tf2onnx's ONNX of
  a full-int8 TFLite) become the float ops they are defined as, which Core ML has:
  q = Cast(Clip(Round(x / s) + zp, qmin, qmax)) and x = (Cast(q) - zp) * s. ONNX rounds half
  to even; so does Core ML's `round` (MIL: "0.5 is rounded to 0"; onnx2coreml lowers ONNX
  Round to it for that reason), so the integers are the same where x / s is computed exactly
  (a float16 program rounds x / s itself: an integer can come out one off near a half).
  The integers between them are held in float32 (onnx2coreml has no 8-bit type), and the
  graph's int8/uint8 inputs and outputs become int32, when only ops that move values
  (Concat, Slice, Reshape...) read them; otherwise the casts stay.
- reverse_sequence_as_gather: a ReverseSequence with constant lengths becomes a Gather (or
  GatherElements) along its time axis with constant indices.
- select_if_branches: an `If` on data (no constant decides it) whose branches are plain
  computations with outputs of one static shape becomes both branches and a Where.

Each is applied only before onnx -> coreml, in name order (the order listed here), only where the
graph holds its pattern; fold_constants only where an op is outside onnx2coreml's own
`supported_ops()`. The artefact is validated against the original, unrewritten ONNX.
"""

from converters.rewrite import rewrite
from converters.rewrite.onnx import ONNX2COREML, _input_shapes, constants, fold

QDQ = ("QuantizeLinear", "DequantizeLinear")
_DEFAULT = ("", "ai.onnx")


def unlowered(model):
    """{op: count} of the nodes (main graph and subgraphs) onnx2coreml has no lowering for;
    Constant is left out (the route moves the main graph's Constants into initializers)."""
    import collections

    try:
        from onnx2coreml import supported_ops
    except ImportError:   # the route itself says what to install
        return {}

    supported = supported_ops()
    out = collections.Counter()

    def walk(graph):
        for n in graph.node:
            key = n.op_type if n.domain in _DEFAULT else f"{n.domain}::{n.op_type}"
            if key not in supported and key != "Constant":
                out[key] += 1
            for a in n.attribute:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(g)

    walk(model.graph)
    return dict(out)


def _names(ops):
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(ops.items())) or "none"


@rewrite("onnx", "fold_constants", needed_by=(ONNX2COREML,))
class FoldConstants:
    pattern = "ops onnx2coreml cannot lower"   # named when --no-rewrite refuses the route
    describe = "folded {n} nodes on constants (ops onnx2coreml cannot lower: {before} -> {after})"

    @staticmethod
    def matches(model, options=None):
        return sum(unlowered(model).values())

    @staticmethod
    def apply(model, options=None):
        before = unlowered(model)
        new, counts = fold(model, {}, _input_shapes(model, options))
        n = counts["nodes"] + counts["if"]
        if not n:
            return model, 0, {}
        return new, n, {"before": _names(before), "after": _names(unlowered(new))}


def _ranks(model):
    """{tensor: rank} where shape inference knows it."""
    import onnx

    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # ranks are needed only for per-axis scales
        return {}
    out = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in list(g.value_info) + list(g.input)
           if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")}
    out.update({t.name: len(t.dims) for t in g.initializer})
    return out


def _qdq_plan(node, consts, ranks):
    """(float32 scale, float32 zero point, integer dtype), broadcastable against the node's
    data input, or None when the node is not one this rewrite expresses (scale or zero
    point computed at run time, a per-axis scale on a tensor of unknown rank, a type other
    than 8- or 16-bit integers)."""
    import numpy as np

    attrs = {a.name: a for a in node.attribute}
    if node.domain not in _DEFAULT or set(attrs) - {"axis", "saturate"} or len(node.input) < 2:
        return None
    s = consts.get(node.input[1])
    zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    zp = consts.get(zp_name) if zp_name else np.zeros((), np.uint8)
    if s is None or zp is None or s.dtype != np.float32 or zp.dtype not in (np.int8, np.uint8, np.int16, np.uint16):
        return None
    dtype = zp.dtype
    s, zp = s.astype(np.float32), zp.astype(np.float32)
    if s.size > 1 or zp.size > 1:
        rank = ranks.get(node.input[0])
        axis = attrs["axis"].i if "axis" in attrs else 1
        if rank is None or s.ndim != 1:
            return None
        shape = [1] * rank
        shape[axis % rank] = s.size
        s, zp = s.reshape(shape), np.broadcast_to(zp, s.shape).reshape(shape)
    return s, zp, dtype


def express_qdq(model):
    """(new model, count): each QuantizeLinear / DequantizeLinear with constant scale and zero
    point becomes its defining float arithmetic (see the module docstring)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    consts, ranks = constants(m), _ranks(m)
    nodes, inits, count = [], [], 0
    for n in g.node:
        plan = _qdq_plan(n, consts, ranks) if n.op_type in QDQ else None
        if plan is None:
            nodes.append(n)
            continue
        s, zp, dtype = plan
        p = f"{n.name or n.output[0]}/as_float/"
        inits += [numpy_helper.from_array(s, p + "scale"), numpy_helper.from_array(zp, p + "zero_point")]
        x, y = n.input[0], n.output[0]
        if n.op_type == "QuantizeLinear":
            info = np.iinfo(dtype)
            inits += [numpy_helper.from_array(np.array(info.min, np.float32), p + "qmin"),
                      numpy_helper.from_array(np.array(info.max, np.float32), p + "qmax")]
            nodes += [helper.make_node("Div", [x, p + "scale"], [p + "scaled"], name=p + "div"),
                      helper.make_node("Round", [p + "scaled"], [p + "rounded"], name=p + "round"),
                      helper.make_node("Add", [p + "rounded", p + "zero_point"], [p + "shifted"], name=p + "add"),
                      helper.make_node("Clip", [p + "shifted", p + "qmin", p + "qmax"], [p + "clipped"],
                                       name=p + "clip"),
                      helper.make_node("Cast", [p + "clipped"], [y], name=p + "cast",
                                       to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))]
        else:
            nodes += [helper.make_node("Cast", [x], [p + "float"], name=p + "cast", to=onnx.TensorProto.FLOAT),
                      helper.make_node("Sub", [p + "float", p + "zero_point"], [p + "centred"], name=p + "sub"),
                      helper.make_node("Mul", [p + "centred", p + "scale"], [y], name=p + "mul")]
        count += 1
    if not count:
        return model, 0
    _set_nodes(g, nodes, inits)
    _integers_as_float(g)
    _drop_unread(g)
    return m, count


# Ops that only move, pick or compare integers: on integer values held in float32 they give
# the same values. {op: input positions holding data (None: all)}.
MOVES = {"Concat": None, "Slice": (0,), "Reshape": (0,), "Transpose": (0,), "Squeeze": (0,),
         "Unsqueeze": (0,), "Identity": (0,), "Flatten": (0,), "Split": (0,), "Gather": (0,),
         "Expand": (0,), "Tile": (0,), "Pad": (0, 2), "MaxPool": (0,)}
_INTEGERS = (2, 3, 4, 5)   # TensorProto UINT8, INT8, UINT16, INT16


def _integers_as_float(g):
    """The 8/16-bit integer tensors between the expressed Quantize/DequantizeLinear (the
    graph's integer inputs and outputs, a full-int8 model's state, what Concat, Slice,
    Reshape... move) are held in float32 instead: onnx2coreml has no int8 or uint8 type, and
    these ops give the same integers on float32 values (exact below 2**24). Only when every
    reader of such a tensor is one of those ops or an expressed DequantizeLinear; otherwise
    the graph is left with its casts. Changes `g` in place; returns whether it did."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    casts = {n.name: n for n in g.node if n.op_type == "Cast" and n.name.endswith("/as_float/cast")}
    ints = {i.name for i in g.input if i.type.tensor_type.elem_type in _INTEGERS}
    ints |= {n.output[0] for n in casts.values() if n.attribute[0].i != TensorProto.FLOAT}
    consts = {t.name: t for t in g.initializer if t.data_type in _INTEGERS}
    identities = []
    for n in g.node:
        if n.name in casts:   # an expressed Quantize's cast, or a Dequantize's of a held tensor
            if n.attribute[0].i != TensorProto.FLOAT or n.input[0] in ints:
                identities.append(n)
            continue
        held = [k for k, name in enumerate(n.input) if name in ints]
        if not held:
            continue
        data = MOVES.get(n.op_type, ())
        data = range(len(n.input)) if data is None else data
        if any(k not in data for k in held):
            return False
        ints |= {n.input[k] for k in data if k < len(n.input) and n.input[k] in consts}
        ints |= set(n.output)
    for n in identities:
        n.op_type = "Identity"
        del n.attribute[:]
    for t in g.initializer:
        if t.name in ints and t.name in consts:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    _int32_boundary(g, ints)
    return True


def _int32_boundary(g, ints):
    """The graph's integer inputs and outputs become int32 (a type Core ML's inputs and outputs
    have), cast to and from the float32 that holds them inside: the model still takes and
    returns integers, which validation quantizes and dequantizes with the source's parameters."""
    from onnx import TensorProto, helper

    inner, head, tail = {}, [], []
    for v in g.input:
        if v.name in ints:
            inner[v.name] = v.name + "/as_float"
            head.append(helper.make_node("Cast", [v.name], [inner[v.name]], name=v.name + "/to_float",
                                         to=TensorProto.FLOAT))
            v.type.tensor_type.elem_type = TensorProto.INT32
    for v in g.output:
        if v.name in ints:
            held = inner.setdefault(v.name, v.name + "/as_float")
            tail.append(helper.make_node("Cast", [held], [v.name], name=v.name + "/to_int32", to=TensorProto.INT32))
            v.type.tensor_type.elem_type = TensorProto.INT32
    for n in g.node:
        n.input[:] = [inner.get(i, i) for i in n.input]
        n.output[:] = [inner.get(o, o) for o in n.output]
    _set_nodes(g, head + list(g.node) + tail)


def _set_nodes(g, nodes, inits=()):
    """The graph's nodes replaced by `nodes`, and `inits` added to its initializers."""
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(inits)


def _drop_unread(g):
    """Initializers nothing reads go, and the value infos (the shapes are inferred again)."""
    read = _read(g)
    kept = [t for t in g.initializer if t.name in read]
    del g.initializer[:]
    g.initializer.extend(kept)
    del g.value_info[:]


def _read(graph):
    """The names the graph's nodes (and their subgraphs') read, and its outputs."""
    from converters.rewrite.onnx import _subgraphs

    out = {o.name for o in graph.output}
    for n in graph.node:
        out.update(n.input)
        for g in _subgraphs(n):
            out |= _read(g)
    return out


@rewrite("onnx", "qdq_as_float", needed_by=(ONNX2COREML,))
class QDQAsFloat:
    pattern = "QuantizeLinear/DequantizeLinear"   # named when --no-rewrite refuses the route
    describe = "expressed {n} QuantizeLinear/DequantizeLinear as float arithmetic (divide, round half to even, clip, cast)"

    @staticmethod
    def matches(model, options=None):
        return sum(n.op_type in QDQ and n.domain in _DEFAULT for n in model.graph.node)

    @staticmethod
    def apply(model, options=None):
        return express_qdq(model)


def _static(model, names):
    """{name: (elem type, [dims])} of `names` whose type and shape inference fixes."""
    import onnx

    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # then no If is known to be safe to select
        return {}
    out = {}
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        t = vi.type.tensor_type
        if vi.name in names and vi.type.HasField("tensor_type") and t.HasField("shape") \
                and all(d.HasField("dim_value") for d in t.shape.dim):
            out[vi.name] = (t.elem_type, [int(d.dim_value) for d in t.shape.dim])
    return out


_EFFECTS = {"If", "Loop", "Scan", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
            "Multinomial", "Bernoulli"}


def if_as_where(model):
    """(new model, count): each `If` of the main graph whose branches are plain computations
    (no nested control flow, nothing random) giving outputs of the same static shape and type
    becomes both branches, inlined, and a Where on the condition per output. Core ML computes
    both; the values are the taken branch's (Where takes nothing from the other one, not even
    a NaN). An If with a constant condition is folded before (fold_constants)."""
    import onnx
    from onnx import helper

    from converters.rewrite.onnx import _inline

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    names = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {t.name for t in g.initializer}
    nodes, inits, pairs, count = [], [], [], 0
    for n in g.node:
        branches = {a.name: a.g for a in n.attribute}
        if n.op_type != "If" or n.domain not in _DEFAULT or set(branches) != {"then_branch", "else_branch"} or \
                any(x.op_type in _EFFECTS or any(a.g.node or a.graphs for a in x.attribute)
                    for b in branches.values() for x in b.node):
            nodes.append(n)
            continue
        selected = []
        for side in ("then_branch", "else_branch"):
            stub = helper.make_node("If", list(n.input), [f"{o}/{side}" for o in n.output], name=f"{n.name}/{side}")
            new, extra = _inline(stub, branches[side], names)
            names |= {o for x in new for o in x.output} | {t.name for t in extra}
            nodes += new
            inits += extra
            selected.append(list(stub.output))
        for out, t, e in zip(n.output, *selected):
            nodes.append(helper.make_node("Where", [n.input[0], t, e], [out], name=f"{n.name}/{out}/where"))
            pairs.append((t, e))
        count += 1
    if not count:
        return model, 0
    _set_nodes(g, nodes, inits)
    del g.value_info[:]
    known = _static(m, {x for p in pairs for x in p} | {n.input[0] for n in g.node if n.op_type == "Where"})
    if any(t not in known or known.get(t) != known.get(e) for t, e in pairs):
        return model, 0        # a branch's output shape is open or differs: If cannot be a Where
    _unsqueezed_conditions(m, known)
    return m, count


def _unsqueezed_conditions(m, known):
    """A Where's condition made by reshaping one boolean to a scalar (tf2onnx's squeeze before
    an If) is read before the reshape when that keeps the result's shape (its dims are all 1
    and no more than the output's); the reshape, then unread, goes. onnx2coreml types an
    empty shape constant as float and refuses that Reshape."""
    g = m.graph
    made = {o: n for n in g.node for o in n.output}
    for w in (n for n in g.node if n.op_type == "Where"):
        src = made.get(w.input[0])
        if src is None or src.op_type not in ("Reshape", "Squeeze") or src.input[0] not in _static(m, {src.input[0]}):
            continue
        _, dims = _static(m, {src.input[0]})[src.input[0]]
        if all(d == 1 for d in dims) and len(dims) <= len(known.get(w.input[1], (0, []))[1]):
            w.input[0] = src.input[0]
    _prune(g)


def _prune(g):
    """Remove the nodes whose outputs nothing reads (repeatedly)."""
    while True:
        read = _read(g)
        keep = [n for n in g.node if any(o in read for o in n.output)]
        if len(keep) == len(g.node):
            return
        _set_nodes(g, keep)


@rewrite("onnx", "select_if_branches", needed_by=(ONNX2COREML,))
class IfAsWhere:
    pattern = "If"   # named when --no-rewrite refuses the route
    describe = "computed both branches of {n} If and selected the taken one with Where"

    @staticmethod
    def matches(model, options=None):
        return sum(n.op_type == "If" and n.domain in _DEFAULT for n in model.graph.node)

    @staticmethod
    def apply(model, options=None):
        return if_as_where(model)


def reverse_as_gather(model):
    """(new model, count): each ReverseSequence with constant lengths becomes a gather along
    its time axis: with one length L for every batch entry, Gather with the indices
    L-1..0, L..T-1; with several, GatherElements with each entry's indices (the input's
    shape static). tf.reverse exported by tf2onnx (BirdNET's stft framing) is the first."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    consts, shapes = constants(m), None
    nodes, inits, count = [], [], 0
    for n in g.node:
        lens = consts.get(n.input[1]) if n.op_type == "ReverseSequence" and len(n.input) == 2 else None
        if lens is None:
            nodes.append(n)
            continue
        attrs = {a.name: a.i for a in n.attribute}
        t_axis, b_axis = attrs.get("time_axis", 0), attrs.get("batch_axis", 1)
        if shapes is None:
            shapes = {k: v[1] for k, v in _static(m, {i for x in g.node for i in x.input}).items()}
        dims = shapes.get(n.input[0])
        if dims is None:
            nodes.append(n)
            continue
        steps, lens = dims[t_axis], np.asarray(lens, np.int64).reshape(-1)
        p = f"{n.name or n.output[0]}/as_gather/"
        if (lens == lens[0]).all():
            idx = np.concatenate([np.arange(lens[0] - 1, -1, -1), np.arange(lens[0], steps)]).astype(np.int64)
            nodes.append(helper.make_node("Gather", [n.input[0], p + "indices"], list(n.output), name=p + "gather",
                                          axis=t_axis))
        else:
            t = np.arange(steps).reshape([-1 if k == t_axis else 1 for k in range(len(dims))])
            size = lens.reshape([-1 if k == b_axis else 1 for k in range(len(dims))])
            idx = np.broadcast_to(np.where(t < size, size - 1 - t, t), dims).astype(np.int64)
            nodes.append(helper.make_node("GatherElements", [n.input[0], p + "indices"], list(n.output),
                                          name=p + "gather", axis=t_axis))
        inits.append(numpy_helper.from_array(np.ascontiguousarray(idx), p + "indices"))
        count += 1
    if not count:
        return model, 0
    _set_nodes(g, nodes, inits)
    _prune(g)
    _drop_unread(g)
    return m, count


@rewrite("onnx", "reverse_sequence_as_gather", needed_by=(ONNX2COREML,))
class ReverseAsGather:
    pattern = "ReverseSequence"   # named when --no-rewrite refuses the route
    describe = "expressed {n} ReverseSequence as a gather with constant indices"

    @staticmethod
    def matches(model, options=None):
        return sum(n.op_type == "ReverseSequence" for n in model.graph.node)

    @staticmethod
    def apply(model, options=None):
        return reverse_as_gather(model)
