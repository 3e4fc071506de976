"""ONNX rewrites (ModelProto -> ModelProto)."""

from converters.rewrite import rewrite

# Tools that refuse an `If`: onnx2coreml has no Core ML lowering for it, onnx2tf stops at it.
ONNX2COREML, ONNX2TF = "onnx -> coreml", "onnx -> tflite"
# Never folded even when every input is constant.
_NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
               "Bernoulli", "If", "Loop", "Scan"}


def _graph_inputs(model):
    init = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init]


def pinned_inputs(model, options):
    """{input name: value} of the inputs the user pinned by name to one value
    (`--val-range sr:[16000,16000]`), as the validation feeds them: each becomes a constant
    when the rewrite applies (a rank-0 `sr` left as an input is refused by onnx2coreml)."""
    ov = options.input_overrides
    ranges = dict(getattr(ov, "ranges", None) or {})
    out = {}
    for name in sorted(i.name for i in _graph_inputs(model)):
        r = ranges.get(name)
        if r is not None and float(r[0]) == float(r[1]):
            out[name] = r[0]
    return out


def _input_shapes(model, options):
    """{input name: [dims]}: the static shapes the routes out of ONNX give the inputs
    (converters/routes/onnx_inputs.py: the user's, linked dims, a free batch of 1); when
    some dimension stays open, the inputs whose shape the user or the model fixes."""
    from converters.routes.onnx_inputs import static_shapes
    from edge.errors import InputError

    try:
        return {n: list(dims) for n, dims, _ in static_shapes(model, options, "the model")}
    except InputError:
        pass
    ov = options.input_overrides
    given = dict(getattr(ov, "shapes", None) or {})
    inputs = _graph_inputs(model)
    if None in given and len(inputs) == 1:
        given[inputs[0].name] = given.pop(None)
    out = {}
    for i in inputs:
        dims = i.type.tensor_type.shape.dim
        if i.name in given and len(given[i.name]) == len(dims):
            out[i.name] = [int(d) for d in given[i.name]]
        elif all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            out[i.name] = [int(d.dim_value) for d in dims]
    return out


def constants(model, names=None):
    """{name: array} of the main graph's initializers and its Constant nodes holding a tensor
    (`value`); with `names`, only those (the others are not converted to arrays)."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if names is None or t.name in names}
    for n in model.graph.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value" \
                and (names is None or n.output[0] in names):
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _constant_array(node):
    from onnx import helper, numpy_helper

    a = node.attribute[0]
    if a.name == "value":
        return numpy_helper.to_array(a.t)
    import numpy as np

    value = helper.get_attribute_value(a)
    dtype = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
             "value_ints": np.int64}.get(a.name)
    return None if dtype is None else np.array(value, dtype)


def _evaluate(node, consts, opsets):
    """The outputs of one node on constant inputs: ONNX's reference evaluator, or, for an op
    version it has no implementation of (DequantizeLinear before opset 19), onnxruntime on
    the one-node model."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    inits = [numpy_helper.from_array(consts[n], n) for n in dict.fromkeys(i for i in node.input if i)]
    graph = helper.make_graph([node], "fold", [], [helper.ValueInfoProto(name=o) for o in node.output],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=opsets)
    try:
        return ReferenceEvaluator(model).run(None, {})
    except Exception:  # no reference kernel for this op version: onnxruntime computes it
        import onnx

        from edge.ort import ort_session

        model = onnx.shape_inference.infer_shapes(model)
        return ort_session(model.SerializeToString(), optimize=False).run(None, {})


def _subgraphs(node):
    from onnx import AttributeProto

    for a in node.attribute:
        if a.type == AttributeProto.GRAPH:
            yield a.g
        elif a.type == AttributeProto.GRAPHS:
            yield from a.graphs


def _rename_uses(graph, renames):
    """Rename inputs read by the nodes of `graph` and of its nested subgraphs (outer scope)."""
    for n in graph.node:
        for k, name in enumerate(n.input):
            if name in renames:
                n.input[k] = renames[name]
        for g in _subgraphs(n):
            _rename_uses(g, renames)
    for o in graph.output:
        if o.name in renames:
            o.name = renames[o.name]


def _inline(node, taken, taken_names):
    """The nodes (and initializers) that replace `If` node `node` by its branch `taken`; the
    branch's own names that clash with `taken_names` are renamed."""
    from onnx import helper

    branch = type(taken)()
    branch.CopyFrom(taken)
    local = [o for n in branch.node for o in n.output if o] + [t.name for t in branch.initializer]
    renames, k = {}, 0
    for name in local:
        if name in taken_names:
            while f"{name}__inlined{k}" in taken_names:
                k += 1
            renames[name] = f"{name}__inlined{k}"
    if renames:
        for n in branch.node:
            for j, o in enumerate(n.output):
                if o in renames:
                    n.output[j] = renames[o]
        for t in branch.initializer:
            t.name = renames.get(t.name, t.name)
        _rename_uses(branch, renames)
    nodes = list(branch.node) + [helper.make_node("Identity", [b.name], [out], name=f"{node.name}/{out}")
                                 for b, out in zip(branch.output, node.output)]
    return nodes, list(branch.initializer)


def fold(model, pinned, shapes):  # noqa: C901 (a named exception: to be split along its jobs)
    """`pinned` inputs become constants; then, until nothing changes: an `If` with a constant
    condition is replaced by its taken branch, a `Shape` of a tensor whose shape is static
    becomes a constant, and a node whose inputs are all constants becomes its outputs.
    Returns (new model, {"if": n, "nodes": n}) (the model is copied, never changed)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    from edge.ort import onnx_dtype

    dtypes = {i.name: onnx_dtype(i.type.tensor_type.elem_type) for i in _graph_inputs(m)}
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for name, value in pinned.items():
        dims = [d for d in next(i for i in g.input if i.name == name).type.tensor_type.shape.dim]
        shape = shapes.get(name) or ([1] * len(dims))
        consts[name] = np.full(shape, value, dtypes[name])
    for i in g.input:
        if i.name in shapes and i.name not in pinned:
            for d, v in zip(i.type.tensor_type.shape.dim, shapes[i.name]):
                d.Clear()
                d.dim_value = int(v)
    keep_inputs = [i for i in g.input if i.name not in pinned]
    del g.input[:]
    g.input.extend(keep_inputs)
    counts = {"if": 0, "nodes": 0}
    changed = True
    while changed:
        changed = False
        static = {}
        _sync_initializers(g, consts)
        try:
            del g.value_info[:]
            inferred = onnx.shape_inference.infer_shapes(m)
            for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
                dims = vi.type.tensor_type.shape.dim
                if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape") and \
                        all(d.HasField("dim_value") for d in dims):
                    static[vi.name] = [int(d.dim_value) for d in dims]
        except Exception:  # shape inference is a help, not a requirement
            pass
        names = {o for n in g.node for o in n.output} | {i.name for i in g.input} | set(consts)
        out_nodes, new_inits = [], []
        for n in g.node:
            if n.op_type == "If" and n.input[0] in consts:
                taken = [a.g for a in n.attribute
                         if a.name == ("then_branch" if bool(np.asarray(consts[n.input[0]]).reshape(-1)[0])
                                       else "else_branch")][0]
                nodes, inits = _inline(n, taken, names)
                names |= {o for x in nodes for o in x.output} | {t.name for t in inits}
                out_nodes.extend(nodes)
                new_inits.extend(inits)
                counts["if"] += 1
                changed = True
                continue
            if n.op_type == "Constant" and len(n.attribute) == 1:
                value = _constant_array(n)
                if value is not None:
                    consts[n.output[0]] = value
                    continue
            if n.op_type == "Shape" and n.input[0] in static and not any(_subgraphs(n)):
                shape = np.array(static[n.input[0]], np.int64)
                attrs = {a.name: a.i for a in n.attribute}
                consts[n.output[0]] = shape[attrs.get("start", 0):attrs.get("end", len(shape))] \
                    if "end" in attrs else shape[attrs.get("start", 0):]
                counts["nodes"] += 1
                changed = True
                continue
            if n.domain in ("", "ai.onnx") and n.op_type not in _NOT_FOLDED and not any(_subgraphs(n)) \
                    and all(i in consts for i in n.input if i) and any(i for i in n.input):
                try:
                    values = _evaluate(n, consts, m.opset_import)
                except Exception:
                    out_nodes.append(n)
                    continue
                for o, v in zip(n.output, values):
                    consts[o] = np.asarray(v)
                counts["nodes"] += 1
                changed = True
                continue
            out_nodes.append(n)
        for t in new_inits:
            consts[t.name] = numpy_helper.to_array(t)
        del g.node[:]
        g.node.extend(out_nodes)
    _sync_initializers(g, consts)
    del g.value_info[:]
    return m, counts


def _sync_initializers(g, consts):
    """The constants still read (by a node, a nested graph, or as an output) become the
    graph's initializers; the others are dropped."""
    import numpy as np
    from onnx import numpy_helper

    used = set()

    def reads(graph):
        for n in graph.node:
            used.update(n.input)
            for sub in _subgraphs(n):
                reads(sub)

    reads(g)
    used |= {o.name for o in g.output}
    del g.initializer[:]
    g.initializer.extend(numpy_helper.from_array(np.asarray(consts[k]), k) for k in sorted(used)
                         if k in consts)


@rewrite("onnx", "fix_inputs_fold_if", needed_by=(ONNX2COREML, ONNX2TF))
class FixInputsFoldIf:
    """The inputs the user pins to one value with `--val-range NAME:[v,v]` (silero-vad's
    sample rate, which decides an `If`) become constants; with the static input shapes
    these routes use anyway, each `If` whose condition is then constant (on the pinned value,
    or on shape arithmetic) is replaced by its taken branch, and what became constant is
    folded. onnx2coreml has no `If`, onnx2tf stops at it. The result takes the other inputs
    only; validation feeds the source the pinned value."""

    describe = "{fixed}folded {n} If with a constant condition ({nodes} constant nodes)"
    pattern = "If"     # what the tool refuses (named when --no-rewrite refuses the route)

    @staticmethod
    def matches(model, options=None):
        """The main graph's If nodes (whether they fold is known once `apply` tried)."""
        return sum(n.op_type == "If" for n in model.graph.node)

    @staticmethod
    def apply(model, options=None):
        pinned = pinned_inputs(model, options)
        new, counts = fold(model, pinned, _input_shapes(model, options))
        if not counts["if"]:
            return model, 0, {}
        fixed = {k: _text(v) for k, v in pinned.items()}
        return new, counts["if"], {"fixed": "".join(f"fixed {k}={v} and " for k, v in fixed.items()),
                                   "nodes": counts["nodes"], "fixed_arguments": fixed}


def _text(v):
    return str(int(v)) if float(v).is_integer() else str(v)


def _opset(model):
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _static_shapes(model):
    import onnx

    out = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return out
    g = inferred.graph
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.HasField("shape") and \
                all(d.HasField("dim_value") for d in t.shape.dim):
            out[vi.name] = [int(d.dim_value) for d in t.shape.dim]
    for t in g.initializer:
        out[t.name] = list(t.dims)
    return out


def _plain_lstm(node, shapes):
    """(steps, batch, hidden) of an LSTM the unrolling covers (forward, default activations,
    no peepholes, clip or sequence lengths, a static input), else None."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if set(attrs) - {"hidden_size", "direction", "layout", "input_forget"}:
        return None
    if attrs.get("direction", b"forward") not in (b"forward", "forward") or attrs.get("layout", 0) \
            or attrs.get("input_forget", 0):
        return None
    ins = list(node.input) + [""] * (8 - len(node.input))
    if ins[4] or ins[7] or not ins[3] or ins[0] not in shapes:
        return None
    steps, batch, _ = shapes[ins[0]]
    return (steps, batch, int(attrs["hidden_size"])) if 0 < steps <= 64 else None


def unroll_lstm(model):
    """Each plain LSTM (see _plain_lstm) becomes its gate arithmetic, one step after the other:
    gates = x_t W^T + h R^T + Wb + Rb, split i, o, f, c (ONNX's order); c = f*c + i*tanh(g_c);
    h = o*tanh(c). Returns (new model, number unrolled, steps)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    shapes = _static_shapes(model)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    opset = _opset(m)
    if opset < 13:
        return model, 0, 0
    nodes, count, steps_total = [], 0, 0
    inits = []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for node in g.node:
        plan = _plain_lstm(node, shapes) if node.op_type == "LSTM" else None
        if plan is None:
            nodes.append(node)
            continue
        steps, batch, hidden = plan
        p = f"{node.name or 'lstm'}/unrolled{count}/"
        ins = list(node.input) + [""] * (8 - len(node.input))
        outs = list(node.output) + [""] * (3 - len(node.output))
        x, w, r, b, h0, c0 = ins[0], ins[1], ins[2], ins[3], ins[5], ins[6]
        ax0 = const(p + "ax0", np.array([0], np.int64))
        new = [helper.make_node("Squeeze", [w, ax0], [p + "w"]),
               helper.make_node("Transpose", [p + "w"], [p + "wt"], perm=[1, 0]),
               helper.make_node("Squeeze", [r, ax0], [p + "r"]),
               helper.make_node("Transpose", [p + "r"], [p + "rt"], perm=[1, 0]),
               helper.make_node("Squeeze", [b, ax0], [p + "b"]),
               helper.make_node("Slice", [p + "b", const(p + "b0", np.array([0], np.int64)),
                                          const(p + "b1", np.array([4 * hidden], np.int64)), ax0], [p + "wb"]),
               helper.make_node("Slice", [p + "b", const(p + "b2", np.array([4 * hidden], np.int64)),
                                          const(p + "b3", np.array([8 * hidden], np.int64)), ax0], [p + "rb"]),
               helper.make_node("Add", [p + "wb", p + "rb"], [p + "bias"])]
        zeros = np.zeros((batch, hidden), np.float32)
        h = p + "h0"
        new.append(helper.make_node("Squeeze", [h0, ax0], [h]) if h0 else
                   helper.make_node("Identity", [const(p + "zeros_h", zeros)], [h]))
        c = p + "c0"
        new.append(helper.make_node("Squeeze", [c0, ax0], [c]) if c0 else
                   helper.make_node("Identity", [const(p + "zeros_c", zeros)], [c]))
        ys = []
        split_kw = {"num_outputs": 4} if opset >= 18 else {}
        for t in range(steps):
            s = f"{p}t{t}/"
            new += [helper.make_node("Slice", [x, const(s + "s0", np.array([t], np.int64)),
                                               const(s + "s1", np.array([t + 1], np.int64)), ax0], [s + "x3"]),
                    helper.make_node("Squeeze", [s + "x3", ax0], [s + "x"]),
                    helper.make_node("MatMul", [s + "x", p + "wt"], [s + "xw"]),
                    helper.make_node("MatMul", [h, p + "rt"], [s + "hr"]),
                    helper.make_node("Add", [s + "xw", s + "hr"], [s + "g0"]),
                    helper.make_node("Add", [s + "g0", p + "bias"], [s + "g"]),
                    helper.make_node("Split", [s + "g"], [s + "gi", s + "go", s + "gf", s + "gc"], axis=1,
                                     **split_kw),
                    helper.make_node("Sigmoid", [s + "gi"], [s + "i"]),
                    helper.make_node("Sigmoid", [s + "go"], [s + "o"]),
                    helper.make_node("Sigmoid", [s + "gf"], [s + "f"]),
                    helper.make_node("Tanh", [s + "gc"], [s + "cc"]),
                    helper.make_node("Mul", [s + "f", c], [s + "fc"]),
                    helper.make_node("Mul", [s + "i", s + "cc"], [s + "ic"]),
                    helper.make_node("Add", [s + "fc", s + "ic"], [s + "c"]),
                    helper.make_node("Tanh", [s + "c"], [s + "tc"]),
                    helper.make_node("Mul", [s + "o", s + "tc"], [s + "h"])]
            h, c = s + "h", s + "c"
            ys.append(h)
        if outs[0]:
            ax01 = const(p + "ax01", np.array([0, 1], np.int64))
            parts = []
            for k, y in enumerate(ys):
                new.append(helper.make_node("Unsqueeze", [y, ax01], [f"{p}y{k}"]))
                parts.append(f"{p}y{k}")
            new.append(helper.make_node("Concat", parts, [outs[0]], axis=0) if len(parts) > 1 else
                       helper.make_node("Identity", parts, [outs[0]]))
        if outs[1]:
            new.append(helper.make_node("Unsqueeze", [h, ax0], [outs[1]]))
        if outs[2]:
            new.append(helper.make_node("Unsqueeze", [c, ax0], [outs[2]]))
        nodes += new
        count += 1
        steps_total += steps
    if not count:
        return model, 0, 0
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(inits)
    del g.value_info[:]
    return m, count, steps_total


@rewrite("onnx", "unroll_lstm", needed_by=(ONNX2TF,))
class UnrollLSTM:
    """A forward LSTM with a static sequence length (silero-vad's decoder, one step) becomes
    its gate arithmetic (MatMul, Sigmoid, Tanh), step by step: onnx2tf's own LSTM stops at
    the initial state ("initial_state ... not compatible with cell.state_size")."""

    describe = "unrolled {n} LSTM into MatMul and gate ops ({steps} steps)"
    pattern = "LSTM"     # what the tool refuses (named when --no-rewrite refuses the route)

    @staticmethod
    def matches(model, options=None):
        return sum(n.op_type == "LSTM" for n in model.graph.node)

    @staticmethod
    def apply(model, options=None):
        new, count, steps = unroll_lstm(model)
        return new, count, {"steps": steps}
