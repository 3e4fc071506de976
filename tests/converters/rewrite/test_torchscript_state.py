"""State kept in a TorchScript module's attributes made explicit (converters/rewrite/
torchscript_state.py), and ops coremltools lacks written as their arithmetic
(torchscript_ops.py).

The class of model: a scripted forward that assigns its own attributes, with the shapes seen
in streaming models (silero-vad's): a context created lazily on the first call, ints that
decide a reset and settle after one call, state assigned in a branch on a fixed argument or on
the data, a tuple output, a shape check that raises. Each is rewritten and run step by step
against the original, fresh; converted with the CLI it is validated in steps. State that
cannot be fixed-shape (an int that counts calls, state assigned in a loop) is refused in one
line, and an initial value the rewrite guesses wrong (a lazy state created as ones, not zeros)
fails validation instead of passing.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

STEPS = 6


class LazyContext(torch.nn.Module):
    """silero-vad's pattern: context and hidden state created on the first call, a reset when
    the sample rate changes, a shape check, two outputs."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w = torch.nn.Parameter(torch.randn(6, 3, generator=g) * 0.5)
        self._context = torch.zeros(0)
        self._h = torch.zeros(0)
        self._last_sr = 0

    def reset_states(self, batch: int):
        self._context = torch.zeros(0)
        self._h = torch.zeros([batch, 3])
        self._last_sr = 0

    def forward(self, x, sr: int):
        if x.dim() not in (2, 3):
            raise ValueError("x must be 2-D")
        if self._last_sr and self._last_sr != sr:
            self.reset_states(x.shape[0])
        if not len(self._context):
            self._context = torch.zeros([x.shape[0], 2])
        if not len(self._h):
            self._h = torch.zeros([x.shape[0], 3])
        xc = torch.cat([self._context, x], 1)
        scale = 1.0 if sr == 16000 else 0.5
        h = torch.tanh(torch.matmul(xc, self.w) * scale + self._h)
        self._h = h
        self._context = xc[:, -2:]
        self._last_sr = sr
        return h.sum(1, keepdim=True), h


class RunningMean(torch.nn.Module):
    """A non-zero initial value, assigned in a branch on a fixed argument."""

    def __init__(self):
        super().__init__()
        self.mean = torch.full([1, 4], 0.5)

    def forward(self, x, mode: int):
        if mode == 1:
            self.mean = self.mean * 0.9 + x * 0.1
        else:
            self.mean = self.mean * 0.5 + x * 0.5
        return x - self.mean


class Gate(torch.nn.Module):
    """State assigned in a branch on the data (kept as a branch with an output)."""

    def __init__(self):
        super().__init__()
        self.acc = torch.ones([1, 4])

    def forward(self, x):
        if bool(x.sum() > 0):
            self.acc = self.acc + x
        else:
            self.acc = self.acc * 0.5
        return self.acc * 2.0


class Counter(torch.nn.Module):
    """An int that counts the calls: no fixed-shape state to make explicit."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def forward(self, x):
        self.n = self.n + 1
        return x * float(self.n)


class LoopState(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.acc = torch.zeros([1, 4])

    def forward(self, x):
        for _ in range(int(x.shape[0]) + 1):
            self.acc = self.acc * 0.5 + x
        return self.acc


class LazyOnes(torch.nn.Module):
    """Created lazily as ones: the rewrite starts it from zeros, which validation must catch."""

    def __init__(self):
        super().__init__()
        self.acc = torch.zeros(0)

    def forward(self, x):
        if not len(self.acc):
            self.acc = torch.ones([1, 4])
        self.acc = self.acc * 0.5 + x
        return self.acc


# name -> (module class, input shape, fixed arguments, state attributes, settled scalars)
STATEFUL = {
    "lazy_context": (LazyContext, [1, 4], {"sr": 16000}, ["_context", "_h"], {"_last_sr": 16000}),
    "running_mean": (RunningMean, [1, 4], {"mode": 1}, ["mean"], {}),
    "gate": (Gate, [1, 4], {}, ["acc"], {}),
}


def _scripted(cls):
    return torch.jit.script(cls().eval())


def _options(shape, fixed):
    from converters.options import ConvertOptions
    from converters.validation.signature import InputOverrides

    options = ConvertOptions(trust_pickle=True)
    options.input_overrides = InputOverrides.parse(shapes=[f"x:{shape}".replace(" ", "")],
                                                   args=[f"{k}={v}" for k, v in fixed.items()])
    return options


def _inputs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    # both signs, so a branch on the data takes both ways over the steps
    return [torch.rand(shape, generator=g) * 2 - 1 + (0.6 if i % 2 else -0.6) for i in range(STEPS)]


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_the_rewritten_module_computes_every_step_the_original_does(name, tmp_path):
    from converters.rewrite.torchscript import forward_graph, nodes
    from converters.rewrite.torchscript_state import ExplicitState

    cls, shape, fixed, state, settled = STATEFUL[name]
    model = _scripted(cls)
    assert ExplicitState.matches(model) == len(state) + len(settled)
    module, n, info = ExplicitState.apply(_scripted(cls), _options(shape, fixed))
    assert n == len(state) and [r["variable"] for r in info["state"]] == state
    assert info["fixed_arguments"] == fixed
    for k, v in settled.items():
        assert f"self.{k}" in info["settled"] and repr(v) in info["settled"]
    graph = forward_graph(module)
    assert not [x for x in nodes(graph.block()) if x.kind() in ("prim::SetAttr", "prim::GetAttr")]
    torch.jit.save(module, str(tmp_path / "m.pt"))       # the copy the route converts
    module = torch.jit.load(str(tmp_path / "m.pt"))
    fresh = _scripted(cls)
    values = {r["input"]: torch.tensor(r["initial"]) for r in info["state"]}
    with torch.no_grad():
        for x in _inputs(shape):
            want = fresh(x, *fixed.values())
            got = module(x, *values.values())
            want = list(want) if isinstance(want, tuple) else [want]
            assert len(got) == len(want) + len(values)
            for a, b in zip(got, want):
                np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
            values = dict(zip(values, got[len(want):]))


@pytest.mark.parametrize("cls,words", [(Counter, "self.n = 1 after one call and 2 after two"),
                                       (LoopState, "assigns self.acc inside a loop")],
                         ids=["int counting calls", "state in a loop"])
def test_state_that_is_not_fixed_shape_is_refused_in_one_line(cls, words):
    from converters.rewrite.torchscript_state import ExplicitState
    from edge.errors import InputError

    with pytest.raises(InputError) as e:
        ExplicitState.apply(_scripted(cls), _options([1, 4], {}))
    assert words in str(e.value) and "\n" not in str(e.value)


def _saved(cls, tmp_path, name):
    path = tmp_path / f"{name}.pt"
    torch.jit.save(_scripted(cls), str(path))
    return path


def _convert(capsys, path, targets, fixed, *extra):
    from tests.conftest import run_cli

    args = [path, "--to", targets, "-o", path.parent / "out", "--input-shapes", "x:[1,4]",
            "--trust-pickle", "--json", *extra]
    for k, v in fixed.items():
        args += ["--arg", f"{k}={v}"]
    return run_cli(capsys, "convert", *args)


@pytest.mark.slow   # three real conversions (torch.onnx.export, litert-torch, coremltools)
def test_convert_validates_every_target_in_steps_against_the_original(tmp_path, capsys):
    path = _saved(LazyContext, tmp_path, "lazy")
    before = path.read_bytes()
    code, out, err = _convert(capsys, path, "onnx,tflite,coreml", {"sr": 16000})
    assert code == 0, err
    hops = json.loads(out)["models"][0]["artefacts"]
    assert {h["format"] for h in hops} == {"onnx", "tflite", "coreml"}
    for h in hops:
        assert h["validation"]["passed"] is True, h
        assert "steps in sequence, state fed back" in h["validation"]["summary"], h
    side = json.loads((tmp_path / "out" / "lazy.onnx.edgeport.json").read_text())
    assert [r["input"] for r in side["state"]] == ["state_context", "state_h"]
    assert all(r["initial_note"] == "zeros: created on the first call" for r in side["state"])
    assert side["fixed_arguments"] == {"sr": 16000}
    assert any("explicit state" in line for line in side["rewrites"])
    assert path.read_bytes() == before
    code, _, err = _convert(capsys, path, "onnx", {"sr": 16000}, "--no-rewrite", "-o", tmp_path / "off")
    assert code != 0 and "explicit_state" in err, err


@pytest.mark.slow
def test_a_wrong_initial_state_fails_validation_instead_of_passing(tmp_path, capsys):
    """The rewrite starts a lazily created state from zeros; this module creates it as ones,
    so the first step differs: validation says FAILED (exit 1), it does not pass."""
    path = _saved(LazyOnes, tmp_path, "ones")
    code, out, err = _convert(capsys, path, "onnx", {})
    assert code == 1, err
    (hop,) = json.loads(out)["models"][0]["artefacts"]
    assert hop["validation"]["passed"] is False, hop


# ------------------------------------------------------------------- ops for coremltools

class LSTMNet(torch.nn.Module):
    def __init__(self, bias=True):
        super().__init__()
        self.cell = torch.nn.LSTMCell(5, 7, bias=bias)

    def forward(self, x, h, c):
        return self.cell(x, (h, c))


class GRUNet(torch.nn.Module):
    def __init__(self, bias=True):
        super().__init__()
        self.cell = torch.nn.GRUCell(5, 7, bias=bias)

    def forward(self, x, h, c):
        return self.cell(x, h) + 0 * c

@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell"])
def test_decomposed_cells_compute_what_the_op_does(cell, bias):
    from converters.rewrite.torchscript import forward_graph, nodes
    from converters.rewrite.torchscript_ops import DecomposeOps

    torch.manual_seed(0)
    Net = LSTMNet if cell == "LSTMCell" else GRUNet
    model = torch.jit.script(Net(bias).eval())
    assert DecomposeOps.matches(model) == 1
    module, n, info = DecomposeOps.apply(model)
    assert n == 1 and info["ops"] == cell.lower().replace("cell", "_cell")
    graph = forward_graph(module)
    assert not [x for x in nodes(graph.block()) if x.kind().endswith("_cell")]
    g = torch.Generator().manual_seed(1)
    x, h, c = (torch.randn(2, k, generator=g) for k in (5, 7, 7))
    with torch.no_grad():
        want, got = model(x, h, c), module(x, h, c)
    for a, b in zip(got if isinstance(got, tuple) else [got], want if isinstance(want, tuple) else [want]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


class StreamingLSTM(torch.nn.Module):
    """An LSTMCell whose hidden state lives in attributes, created on the first call."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.cell = torch.nn.LSTMCell(5, 7)
        self._h = torch.zeros(0)
        self._c = torch.zeros(0)

    def forward(self, x):
        if not len(self._h):
            self._h = torch.zeros([x.shape[0], 7])
            self._c = torch.zeros([x.shape[0], 7])
        h, c = self.cell(x, (self._h, self._c))
        self._h = h
        self._c = c
        return torch.sigmoid(h.sum(1, keepdim=True))


@pytest.mark.slow   # coremltools and its reference executor
def test_the_direct_core_ml_route_takes_a_streaming_lstm_and_validates_in_steps(tmp_path):
    """torchscript -> coreml directly (the planner goes through ONNX, which needs fewer
    rewrites): explicit_state, then the cell as arithmetic; coremltools refuses the stateless
    copy without the second rewrite, and the Core ML model made with it is validated in steps
    against the original module."""
    pytest.importorskip("coremltools")
    from converters import rewrite
    from converters.artefact import Artefact
    from converters.registry import conversions
    from converters.validation.validate import validate_pair
    from edge.errors import EdgeportError

    src = tmp_path / "lstm.pt"
    torch.jit.save(_scripted(StreamingLSTM), str(src))
    conv = next(c for c in conversions() if c.name == "torchscript -> coreml")
    options = _options([1, 5], {})
    options.progress = lambda line: None
    source = Artefact(str(src), "torchscript", {})
    with rewrite.prepare(source, conv, options) as (given, lines, _):
        assert [line.split(" ")[0] for line in lines] == ["made", "wrote"], lines
        assert "lstm_cell as their arithmetic" in lines[1]
        conv.func(given, str(tmp_path / "lstm.mlpackage"), options)
        metadata = {"state": given.metadata["state"]}
    report = validate_pair(source, Artefact(str(tmp_path / "lstm.mlpackage"), "coreml", metadata), options)
    assert report.passed, report.summary_line()
    assert "steps in sequence, state fed back" in report.summary_line()
    options.no_rewrite = False
    only_state = [r for r in rewrite.candidates(conv.name, "torchscript") if r.name == "explicit_state"]
    model = torch.jit.load(str(src))
    stateless, _, _ = only_state[0].apply(model, options)
    with pytest.raises(EdgeportError, match="lstm_cell"):
        path = tmp_path / "plain.pt"
        torch.jit.save(stateless, str(path))
        conv.func(Artefact(str(path), "torchscript", {"state": given.metadata["state"]}),
                  str(tmp_path / "plain.mlpackage"), options)
