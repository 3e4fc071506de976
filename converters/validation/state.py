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
        """{record input/output name: the runner's own name} (exact, else by letters)."""
        by_clean = {_clean(n): n for n in names}
        found = {}
        for r in self.record:
            want = r.get(key)
            if want is None:
                continue
            found[want] = want if want in names else by_clean.get(_clean(want))
        return found

    def _inputs(self):
        if self._in_names is None:
            self._in_names = self._match([m.name for m in self.inner.input_metadata()], "input")
        return self._in_names

    def input_metadata(self):
        hidden = set(self._inputs().values())
        return [m for m in self.inner.input_metadata() if m.name not in hidden]

    def output_metadata(self):
        metas = self.inner.output_metadata()
        if metas is None:
            return None
        hidden = set(self._match([m.name for m in metas], "output").values())
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
        hidden = set(outs.values())
        return OrderedDict((k, v) for k, v in out.items() if k not in hidden)


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
    """The runner, fed back its own state when its metadata has a `state` record."""
    record = (metadata or {}).get("state")
    return FedBack(runner, record) if record else runner


def stateful_source(runner):
    """True for a TFLite model that keeps resource variables between calls."""
    model = getattr(runner, "model", None)
    main = getattr(model, "main", None)
    return main is not None and any(getattr(op, "builtin", None) == "VAR_HANDLE"
                                    or getattr(op, "opcode", None) == "VAR_HANDLE"
                                    for op in getattr(main, "operators", ()))


def reset(runner):
    """Start a sequence of calls over: the initial state (a fresh interpreter for a stateful
    TFLite model). Returns True when the runner is stateful."""
    if isinstance(runner, FedBack):
        runner.reset()
        return True
    if stateful_source(runner) and getattr(runner, "is_active", False):
        runner.deactivate()
        runner.activate()
        return True
    return False


def is_stateful(runner):
    return isinstance(runner, FedBack) or stateful_source(runner)


def steps_note(runners, count):
    """'N steps, state fed back' when a streaming model is among the runners, else ''."""
    if not any(r is not None and is_stateful(r) for r in runners):
        return ""
    return f"{count} steps in sequence, state fed back"
