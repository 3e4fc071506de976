"""TorchScript rewrite: state kept in module attributes made explicit inputs and outputs.

Imports: edge, converters

A streaming TorchScript module (silero-vad's `silero_vad.jit`) keeps state between calls in
its own attributes: its forward reads `self._state` and `self._context` and assigns them
(`prim::SetAttr`), and keeps ints (`self._last_sr`) that decide whether to reset. No exporter
takes an attribute assignment (torch.onnx.export, TS2EPConverter, coremltools all refuse),
and an exported model could not carry it anyway. The rewrite works on the module's frozen
forward graph (`torch.jit.freeze`: submodules inlined, weights constants):

  * each non-tensor argument takes its --arg value (or its default), as a constant;
  * the module is run twice on example inputs: a tensor attribute the forward assigns becomes
    an input `state_<name>` and an output `state_<name>_out` of the shape it has after a call
    (the same after the second, or the rewrite refuses); an int, float or bool attribute it
    assigns must hold the same value after both calls (the steady state of a fixed-shape
    stream: `_last_sr` = 16000) and is read as that constant;
  * attribute reads become the current value, assignments the new current value, through
    `prim::If` branches (each branch returns the value it leaves; a loop that assigns state
    is refused); then `len`, `dim` and `size` of an input of known shape are folded, and the
    constant branches with them (`if not len(self._context)`: the context's lazy creation);
  * the initial value of each state is the module's own when it has the steady shape, else
    (created lazily on the first call, an empty tensor before) zeros of that shape.

The result is a stateless TorchScript module, forward(inputs..., state_...) -> (outputs...,
state_..._out), saved for the route; the `state` record (as rewrite/tflite_state.py's) says
how to feed it back. Validation runs the original module, fresh, over the samples in order and
the converted model with its state fed back, and compares every step: a wrong initial value or
a branch folded the wrong way is a failed validation, never a silent difference.
"""

from converters.rewrite import rewrite
from converters.rewrite.torchscript import nodes
from converters.routes.torch_loading import state_attributes
from converters.tflite_objects import state_name
from edge.errors import InputError

# Every route out of TorchScript: each exporter refuses prim::SetAttr.
ROUTES = tuple(f"torchscript -> {t}" for t in ("onnx", "tflite", "tflite-int8", "coreml"))
SCALARS = (bool, int, float)


def _steady(module, calls, names):
    """{attribute: value after a call} of a frozen copy run twice with `calls`; refuses state
    whose shape (tensors) or value (scalars) still changes on the second call."""
    import torch

    probe = torch.jit.freeze(module.eval())
    seen = []
    with torch.no_grad():
        for _ in range(2):
            probe(*calls)
            # through _c: an attribute named like "_c" (an LSTM cell state) is shadowed on the Python side
            seen.append({n: probe._c.getattr(n) for n in names})
    out = {}
    for n in names:
        a, b = seen[0][n], seen[1][n]
        if isinstance(a, torch.Tensor):
            if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
                raise InputError(f"self.{n} changes shape from call to call "
                                 f"({_shape(a)} then {_shape(b)}): no fixed-shape state to make explicit")
        elif not isinstance(a, SCALARS) or a != b:
            raise InputError(f"self.{n} = {a!r} after one call and {b!r} after two: only tensor "
                             "state, or scalars that settle after the first call, can be made explicit")
        out[n] = a
    return out


def _shape(value):
    return list(getattr(value, "shape", ())) if hasattr(value, "shape") else type(value).__name__


def _lower(graph, self_value, env, constants, block):
    """Replace reads and assignments of `self`'s state attributes in `block` by values (see
    the module docstring); `env` maps each tensor state to its current value."""
    for node in list(block.nodes()):
        kind = node.kind()
        ins = list(node.inputs())
        if kind in ("prim::GetAttr", "prim::SetAttr") and ins[0].unique() == self_value.unique() and \
                node.s("name") in (*env, *constants):
            name = node.s("name")
            if kind == "prim::GetAttr":
                if name in constants:
                    value = graph.insertConstant(constants[name])
                    value.node().moveBefore(node)
                else:
                    value = env[name]
                node.output().replaceAllUsesWith(value)
            elif name in env:
                env[name] = ins[1]
            node.destroy()
            continue
        blocks = list(node.blocks())
        if not blocks:
            continue
        envs = []
        for b in blocks:
            inner = dict(env)
            _lower(graph, self_value, inner, constants, b)
            envs.append(inner)
        changed = [k for k in env if any(e[k] is not env[k] for e in envs)]
        if changed and kind != "prim::If":
            raise InputError(f"the forward assigns self.{changed[0]} inside a loop: only state "
                             "assigned outside loops can be made explicit")
        for k in changed:
            for b, e in zip(blocks, envs):
                b.registerOutput(e[k])
            out = node.addOutput()
            out.setType(env[k].type())
            env[k] = out


def _fold_shapes(graph, shapes):
    """Fold len/dim/size of values of known shape, then the constants and branches they decide."""
    import torch

    changed = True
    while changed:
        changed = False
        for node in list(nodes(graph.block())):
            ins = list(node.inputs())
            if node.kind() not in ("aten::len", "aten::dim", "aten::size") or not ins:
                continue
            shape = next((s for v, s in shapes if v == ins[0].unique()), None)
            if shape is None:
                continue
            if node.kind() == "aten::len":
                value = shape[0]
            elif node.kind() == "aten::dim":
                value = len(shape)
            elif len(ins) == 1:
                value = list(shape)
            elif ins[1].node().kind() == "prim::Constant":
                value = shape[ins[1].toIValue()]
            else:
                continue
            const = graph.insertConstant(value)
            const.node().moveBefore(node)
            node.output().replaceAllUsesWith(const)
            node.destroy()
            changed = True
        torch._C._jit_pass_constant_propagation(graph)
        torch._C._jit_pass_dce(graph)


def _flat_outputs(graph):
    """The graph's outputs with a returned tuple's items in its place (a forward returning a
    tuple: its items, then the state)."""
    flat = []
    for i, v in enumerate(graph.outputs()):
        if i == 0 and v.node().kind() == "prim::TupleConstruct":
            flat.extend(v.node().inputs())
        else:
            flat.append(v)
    return flat


def _output_places(graph, records):
    """Each state's place among the model's distinct outputs, for a converter that names its
    outputs by position (litert-torch's output_N) and lists a tensor returned twice once: a
    state that is also an earlier output (a hidden state the forward returns too) is marked
    `output_shared`, so validation feeds it back without hiding that output."""
    flat = [v.unique() for v in _flat_outputs(graph)]
    distinct = list(dict.fromkeys(flat))
    first_state = len(flat) - len(records)
    for k, r in enumerate(records):
        u = flat[first_state + k]
        r["output_index"] = distinct.index(u)
        if flat.index(u) < first_state + k:
            r["output_shared"] = True


def _function(graph, extra=()):
    """A ScriptFunction of `graph` (a copy) returning one tuple: a tuple output's items, the
    other outputs, then the values `extra` (as positions (node index, output index))."""
    import torch

    graph = graph.copy()
    top = list(graph.nodes())
    outs = list(graph.outputs())
    flat = _flat_outputs(graph) + [list(top[i].outputs())[j] for i, j in extra]
    pack = graph.create("prim::TupleConstruct", flat, 1)
    graph.appendNode(pack)
    pack.output().setType(torch._C.TupleType([v.type() for v in flat]))
    for i in reversed(range(len(outs))):
        graph.eraseOutput(i)
    graph.registerOutput(pack.output())
    torch._C._jit_pass_dce(graph)
    return torch._C._create_function_from_graph("stateless_forward", graph)


def _fold_run_shapes(graph, feeds, rounds=8):
    """Fold len/dim/size of the top-level tensors whose shape decides a branch (a shape check
    such as `if x.dim() not in (2, 3): raise`, which TS2EPConverter and coremltools cannot
    take): run the graph on each feed with those tensors as extra outputs, and fold the ones
    whose shape is the same on every feed (the inputs' shapes are fixed; a shape that moves
    with the values is left alone). Again while branches fold away."""
    import torch

    for _ in range(rounds):
        want = [(i, j) for i, node in enumerate(graph.nodes()) for j, v in enumerate(node.outputs())
                if v.type().kind() == "TensorType"
                and any(u.user.kind() in ("aten::len", "aten::dim", "aten::size") for u in v.uses())]
        if not want:
            return
        probe = _function(graph, want)
        seen = []
        with torch.no_grad():
            for feed in feeds:
                got = probe(*feed)
                seen.append([tuple(t.shape) for t in got[len(got) - len(want):]])
        top = list(graph.nodes())
        shapes = [(list(top[i].outputs())[j].unique(), list(seen[0][k]))
                  for k, (i, j) in enumerate(want) if all(s[k] == seen[0][k] for s in seen)]
        before = len(list(nodes(graph.block())))
        _fold_shapes(graph, shapes)
        if len(list(nodes(graph.block()))) == before:
            return


def _module_of(function, names, examples):
    """A saveable ScriptModule running the ScriptFunction `function`: a call of it traced (the
    tracer records a call of the function, branches kept), then that call inlined."""
    import torch

    params = ", ".join(names)   # the forward's own argument names (the tracer keeps them)
    space = {"function": function}
    exec(f"def forward(self, {params}):\n    return function({params})\n", space)  # noqa: S102
    ExplicitState = type("ExplicitState", (torch.nn.Module,), {"forward": space["forward"]})
    with torch.no_grad():
        traced = torch.jit.trace(ExplicitState().eval(), tuple(examples), check_trace=False)
    torch._C._jit_pass_inline(traced.graph)   # in place: the saved module holds the graph itself
    torch._C._jit_pass_dce(traced.graph)
    return traced


def explicit_state(model, options):
    """(stateless ScriptModule, state record, fixed arguments) for a TorchScript `model` whose
    forward assigns attributes (see the module docstring)."""
    import numpy as np
    import torch

    from converters.routes.torch_loading import plan_script_call, script_arguments

    args = script_arguments(model) or []
    tensors, fixed, order = plan_script_call(args, options.input_overrides, "the TorchScript model",
                                             options.input_shape)
    examples = {n: torch.zeros(s, dtype=getattr(torch, np.dtype(d).name)) for n, s, d in tensors}
    calls = [examples[n] if k == "tensor" else fixed[n] for k, n in order]
    names = state_attributes(model)
    steady = _steady(model, calls, names)
    tensors_state = [n for n in names if isinstance(steady[n], torch.Tensor)]
    constants = {n: v for n, v in steady.items() if n not in tensors_state}

    graph = torch.jit.freeze(model.eval()).forward.graph.copy()
    self_value, *arg_values = list(graph.inputs())
    first = next(iter(graph.nodes()))
    for value, (kind, name) in zip(arg_values, order):
        if kind == "const":
            const = graph.insertConstant(fixed[name])
            const.node().moveBefore(first)
            value.replaceAllUsesWith(const)
    for i in reversed(range(len(order))):
        if order[i][0] == "const":
            graph.eraseInput(i + 1)
    env, records, shapes = {}, [], []
    for (_, shape, _), value in zip(tensors, list(graph.inputs())[1:]):
        shapes.append((value.unique(), list(shape)))
    initial = {n: model._c.getattr(n) for n in tensors_state}
    for n in tensors_state:
        value = graph.addInput(state_name(n))
        value.setType(torch._C.TensorType.create_from_tensor(steady[n]))
        env[n] = value
        shapes.append((value.unique(), list(steady[n].shape)))
        start = initial[n]
        lazy = not isinstance(start, torch.Tensor) or start.shape != steady[n].shape
        start = torch.zeros_like(steady[n]) if lazy else start.detach()
        records.append({"variable": n, "input": state_name(n), "output": state_name(n) + "_out",
                        "feed": f"first call: {state_name(n)} = initial; then pass "
                                f"{state_name(n)}_out as {state_name(n)} on the next call",
                        "dtype": str(start.dtype).replace("torch.", ""),
                        "shape": list(start.shape), "scale": 0.0, "zero_point": 0,
                        "initial": start.cpu().numpy().tolist(),
                        **({"initial_note": "zeros: created on the first call"} if lazy else {})})
    _lower(graph, self_value, env, constants, graph.block())
    if self_value.uses():
        raise InputError("the forward still uses the module itself after its state was made "
                         "explicit (an attribute that is neither a constant nor state)")
    for n in tensors_state:
        graph.registerOutput(env[n])
    graph.eraseInput(0)
    _fold_shapes(graph, shapes)
    starts = [torch.tensor(r["initial"], dtype=getattr(torch, r["dtype"])) for r in records]
    feeds = [[examples[n] for n, _, _ in tensors] + starts]
    feeds.append([torch.rand_like(t) * 2 - 1 if t.is_floating_point() else t for t in feeds[0]])
    _fold_run_shapes(graph, feeds)
    function = _function(graph)
    for k, r in enumerate(records):   # where a converter that names by position puts them
        r["input_index"] = len(tensors) + k
    _output_places(graph, records)
    names = [n for n, _, _ in tensors] + [r["input"] for r in records]
    if not all(n.isidentifier() for n in names):
        raise InputError(f"forward argument names {names} are not all Python names")
    module = _module_of(function, names, [examples[n] for n, _, _ in tensors] + starts)
    return module, records, constants, fixed


@rewrite("torchscript", "explicit_state", needed_by=ROUTES)
class ExplicitState:
    """Attributes a TorchScript forward assigns become explicit state inputs and outputs."""

    pattern = "state attributes (prim::SetAttr)"
    describe = ("made {n} tensor attributes the TorchScript forward assigns explicit state "
                "inputs/outputs ({names}){settled}; start from the sidecar's initial values and "
                "pass each state_X_out as state_X on the next call")

    @staticmethod
    def matches(model, options=None):
        return len(state_attributes(model))

    @staticmethod
    def apply(model, options):
        module, records, constants, fixed = explicit_state(model, options)
        settled = (f"; {', '.join(f'self.{k}' for k in constants)} read as "
                   f"{', '.join(repr(v) for v in constants.values())}, the value after every call"
                   if constants else "")
        return module, len(records), {
            "state": records, "names": ", ".join(f"self.{r['variable']}" for r in records),
            "settled": settled, "fixed_arguments": fixed}
