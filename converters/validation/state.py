"""Stepped validation of streaming models: the state fed back between calls.

Imports: edge, converters

A model whose state was made explicit (converters/rewrite/tflite_state.py) carries a `state`
record in its metadata: per variable its input `state_X`, output `state_X_out`, dtype, shape,
quantization and initial value. `wrap` gives its runner the source's face: the state inputs
and outputs are hidden, the first call starts from the initial values and every call passes
each `state_X_out` back as `state_X`. A stateful TFLite source (resource variables) keeps its
own state across invoke() on one interpreter. Validation runs the samples in order, one call
each, on both, so every step is compared; `reset` starts a run of the samples over (a fresh
interpreter, the initial values), as each comparison needs.
"""

from collections import OrderedDict

import numpy as np


def _clean(name):
    return "".join(c for c in str(name).lower() if c.isalnum())


class FedBack:
    """A runner whose explicit state inputs are fed from its previous call's state outputs."""

    def __init__(self, inner, record):
        self.inner = inner
        self.record = list(record)
        self.steps = 0
        self._state = None
        self._in_names = self._out_names = None
        self.show_state = True          # off when the source cannot show its own (see pair)

    def __getattr__(self, name):          # everything else is the wrapped runner's
        return getattr(self.inner, name)

    def activate(self):
        self.inner.activate()
        return self

    def deactivate(self):
        self.inner.deactivate()

    def reset(self):
        self._state = None
        self.steps = 0

    def _match(self, names, key):
        """{record input/output name: the runner's own name}: exact, else by letters, else at
        the position the record gives (`input_index`/`output_index`: a converter that names
        the tensors by position, litert-torch's args_N and output_N)."""
        by_clean = {_clean(n): n for n in names}
        found = {}
        for r in self.record:
            want = r.get(key)
            if want is None:
                continue
            found[want] = want if want in names else by_clean.get(_clean(want))
        taken = set(found.values())
        for r in self.record:
            want, at = r.get(key), r.get(f"{key}_index")
            shared = r.get("output_shared") and key == "output"   # also a model output: not taken
            if want is not None and found[want] is None and isinstance(at, int) and 0 <= at < len(names) \
                    and (shared or names[at] not in taken) \
                    and not any(_clean(w) == _clean(names[at]) for w in found):
                found[want] = names[at]
                taken.add(names[at])
        return found

    def _inputs(self):
        if self._in_names is None:
            self._in_names = self._match([m.name for m in self.inner.input_metadata()], "input")
        return self._in_names

    def input_metadata(self):
        hidden = set(self._inputs().values())
        return [m for m in self.inner.input_metadata() if m.name not in hidden]

    def _hidden_outputs(self, names):
        """The runner's outputs that are state only: a state that is also a model output
        (`output_shared`) and that the converter lists once, under the model output's name,
        stays visible."""
        found = self._match(names, "output")
        shared = {r["output"] for r in self.record if r.get("output_shared")}
        return {v for k, v in found.items()
                if v is not None and not (k in shared and _clean(v) != _clean(k))}

    def output_metadata(self):
        metas = self.inner.output_metadata()
        if metas is None:
            return None
        hidden = self._hidden_outputs([m.name for m in metas])
        return [m for m in metas if m.name not in hidden]

    def _initial(self):
        return {r["input"]: np.asarray(r["initial"], r["dtype"]).reshape(r["shape"])
                for r in self.record if r.get("input")}

    def infer(self, feed):
        from edge.errors import InputError

        state = self._initial() if self._state is None else self._state
        names = self._inputs()
        missing = [k for k, v in names.items() if v is None]
        if missing:
            raise InputError(f"{self.inner.name}: state input(s) {', '.join(missing)} of its sidecar's "
                             "`state` record are not inputs of the model")
        full = dict(feed)
        full.update({names[k]: v for k, v in state.items()})
        out = self.inner.infer(full)
        outs = self._match(list(out), "output")
        nxt = {}
        for r in self.record:
            if not r.get("output"):
                continue
            got = outs.get(r["output"])
            if got is None:
                raise InputError(f"{self.inner.name}: state output {r['output']} of its sidecar's "
                                 "`state` record is not an output of the model")
            if r.get("input"):
                nxt[r["input"]] = _raw(out[got], r)
        self._state = {**state, **nxt}
        self.steps += 1
        # the state after this step, compared too: in the source's units, under the record's names
        hidden = self._hidden_outputs(list(out))
        shown = OrderedDict((k, v) for k, v in out.items() if k not in hidden)
        for r in (self.record if self.show_state else ()):
            if outs.get(r.get("output")) is not None:
                shown[r["output"]] = _real(out[outs[r["output"]]], r.get("scale"), r.get("zero_point"))
        return shown


def _real(value, scale, zero_point):
    """A state value in real units: an integer state dequantized (scale 0: as it is)."""
    value = np.asarray(value)
    if scale and np.issubdtype(value.dtype, np.integer):
        return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return value


class StatefulSource:
    """A stateful TFLite source (resource variables, kept across invoke() on one interpreter)
    that also shows each variable's value after the call, as `state_X_out`: read from the
    tensor its ASSIGN_VARIABLE stores, on an interpreter that keeps every tensor."""

    def __init__(self, inner, assigns):
        self.inner = inner
        self.assigns = assigns          # {state_X_out: (tensor index, scale, zero point)}
        self.shows_state = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def activate(self):
        was = self.inner.is_active
        self.inner.activate()
        if not was:
            self.shows_state = _keep_all_tensors(self.inner)
        return self

    def deactivate(self):
        self.inner.deactivate()

    def reset(self):
        self.deactivate()
        self.activate()

    def infer(self, feed):
        out = self.inner.infer(feed)
        if self.shows_state:
            for name, (index, scale, zp) in self.assigns.items():
                out[name] = _real(np.array(self.inner.interpreter.get_tensor(index)), scale, zp)
        return out


def _keep_all_tensors(runner):
    """Give a TFLite runner an interpreter of the same runtime that keeps every tensor after
    invoke() (so the values the variables were assigned can be read); False if it cannot."""
    import warnings

    it = runner.interpreter
    try:
        with warnings.catch_warnings():   # "intended for debugging": here, a few small tensors
            warnings.simplefilter("ignore")
            fresh = type(it)(model_path=runner.path, experimental_preserve_all_tensors=True)
        fresh.allocate_tensors()
    except (TypeError, ValueError, RuntimeError):
        return False
    runner.interpreter = fresh
    runner._inputs = fresh.get_input_details()
    runner._outputs = fresh.get_output_details()
    runner._allocated = True
    return True


def assigned_tensors(path):
    """{state_X_out: (tensor index, scale, zero point)} of a TFLite model's main graph: per
    variable, the tensor its last ASSIGN_VARIABLE stores (names as the rewrite gives them).
    Read with edge's own flatbuffer reader: no TensorFlow needed."""
    from converters.tflite_objects import state_name
    from edge.tflite_model import TFLiteModel, _read, _Table

    model = TFLiteModel.load(path)
    g = model.main
    op_tables = _Table(model.data, _read(model.data, "<I", 0)).tables(2)[g.index].tables(3)
    handles, found = {}, {}
    for op in g.operators:
        if op.opcode == "VAR_HANDLE":
            options = op_tables[op.index].table(4)   # VarHandleOptions: container, shared_name
            name = (options.string(1) or options.string(0) or "") if options is not None else ""
            handles[op.outputs[0]] = name
        elif op.opcode == "ASSIGN_VARIABLE" and op.inputs[0] in handles:
            t = g.tensors[op.inputs[1]]
            q = t.quantization
            scale = float(q.scale[0]) if q is not None and len(q.scale) == 1 else 0.0
            zp = int(q.zero_point[0]) if scale and len(q.zero_point) else 0
            found[state_name(handles[op.inputs[0]]) + "_out"] = (int(op.inputs[1]), scale, zp)
    return found


def _raw(value, r):
    """A state output as the state input takes it: a runner that dequantized an integer state
    gives it back in its stored integers (scale and zero point of the record)."""
    dtype = np.dtype(r["dtype"])
    value = np.asarray(value)
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(value.dtype, np.integer) and r.get("scale"):
        info = np.iinfo(dtype)
        value = np.clip(np.round(value / r["scale"] + r["zero_point"]), info.min, info.max)
    return value.astype(dtype).reshape(r["shape"])


def wrap(runner, metadata):
    """The runner, fed back its own state when its metadata has a `state` record; a stateful
    TFLite model showing its state after each call."""
    record = (metadata or {}).get("state")
    if record:
        return FedBack(runner, record)
    if stateful_source(runner):
        assigns = assigned_tensors(runner.path)
        if assigns:
            return StatefulSource(runner, assigns)
    return runner


def stateful_source(runner):
    """True for a model that keeps state between calls: a TFLite model with resource
    variables, or a runner that says so itself (`keeps_state()`: a TorchScript module whose
    forward assigns its attributes), which `reset` starts over by loading it afresh."""
    keeps = getattr(runner, "keeps_state", None)
    if callable(keeps) and keeps():
        return True
    model = getattr(runner, "model", None)
    main = getattr(model, "main", None)
    return main is not None and any(getattr(op, "builtin", None) == "VAR_HANDLE"
                                    or getattr(op, "opcode", None) == "VAR_HANDLE"
                                    for op in getattr(main, "operators", ()))


def reset(runner):
    """Start a sequence of calls over: the initial state (a fresh interpreter for a stateful
    TFLite model, the module loaded afresh for a TorchScript one). Returns True when the
    runner is stateful."""
    if isinstance(runner, (FedBack, StatefulSource)):
        runner.reset()
        return True
    if stateful_source(runner) and getattr(runner, "is_active", False):
        runner.deactivate()
        runner.activate()
        return True
    return False


def is_stateful(runner):
    return isinstance(runner, (FedBack, StatefulSource)) or stateful_source(runner)


def steps_note(runners, count):
    """'N steps, state fed back' when a streaming model is among the runners, else ''."""
    if not any(r is not None and is_stateful(r) for r in runners):
        return ""
    return f"{count} steps in sequence, state fed back"


def state_roles(runner):
    """{state_X_out: ("raw", why)}: the state a streaming model shows is compared as plain
    numbers, not guessed to be a map or scores."""
    if isinstance(runner, StatefulSource):
        names = list(runner.assigns) if runner.shows_state else []
    elif isinstance(runner, FedBack):
        names = [r["output"] for r in runner.record if r.get("output")]
    else:
        return {}
    return {n: ("raw", "the streaming state after each step") for n in names}


def pair(source, runners):
    """Compare the state only where both sides show it: a stateful source that cannot read
    its variables back (a runtime without experimental_preserve_all_tensors) is compared on
    its outputs alone."""
    shows = isinstance(source, FedBack) or (isinstance(source, StatefulSource) and source.shows_state)
    for r in runners:
        if isinstance(r, FedBack):
            r.show_state = shows
