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


def _producers(graph):
    return {o: n for n in graph.node for o in n.output}


def _condition_inputs(model):
    """Names of the graph inputs an `If` condition of the main graph depends on."""
    producers, inputs = _producers(model.graph), {i.name for i in _graph_inputs(model)}
    seen, stack, found = set(), [n.input[0] for n in model.graph.node if n.op_type == "If"], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inputs:
            found.add(name)
        node = producers.get(name)
        if node is not None:
            stack.extend(i for i in node.input if i)
    return found


def pinned_inputs(model, options):
    """{input name: value} of the inputs an `If` condition depends on that the user pinned to
    one value (`--val-range sr:[16000,16000]`), as the validation feeds them."""
    ov = getattr(options, "input_overrides", None)
    ranges = dict(getattr(ov, "ranges", None) or {})
    out = {}
    for name in sorted(_condition_inputs(model)):
        r = ranges.get(name)
        if r is not None and float(r[0]) == float(r[1]):
            out[name] = r[0]
    return out


def _input_shapes(model, options):
    """{input name: [dims]}: the static shapes the routes out of ONNX give the inputs
    (converters/routes/onnx_inputs.py: the user's, linked dims, a free batch of 1); when
    some dimension stays open, the inputs whose shape the user or the model fixes."""
    from edge.errors import InputError

    from converters.routes.onnx_inputs import static_shapes

    try:
        return {n: list(dims) for n, dims, _ in static_shapes(model, options, "the model")}
    except InputError:
        pass
    ov = getattr(options, "input_overrides", None)
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
    """The outputs of one node on constant inputs (ONNX's reference evaluator)."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    inits = [numpy_helper.from_array(consts[n], n) for n in dict.fromkeys(i for i in node.input if i)]
    graph = helper.make_graph([node], "fold", [], [helper.ValueInfoProto(name=o) for o in node.output],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=opsets)
    return ReferenceEvaluator(model).run(None, {})


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


def fold(model, pinned, shapes):
    """`pinned` inputs become constants; then, until nothing changes: an `If` with a constant
    condition is replaced by its taken branch, a `Shape` of a tensor whose shape is static
    becomes a constant, and a node whose inputs are all constants becomes its outputs.
    Returns (new model, {"if": n, "nodes": n}) (the model is copied, never changed)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    dtypes = {i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in _graph_inputs(m)}
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
    """An input that decides an `If` (silero-vad's sample rate), pinned by the user to one
    value with `--val-range NAME:[v,v]`, becomes a constant; with the static input shapes
    these routes use anyway, each `If` whose condition is then constant (on the pinned value,
    or on shape arithmetic) is replaced by its taken branch, and what became constant is
    folded. onnx2coreml has no `If`, onnx2tf stops at it. The result takes the other inputs
    only; validation feeds the source the pinned value."""

    describe = "{fixed}folded {n} If with a constant condition ({nodes} constant nodes)"

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
