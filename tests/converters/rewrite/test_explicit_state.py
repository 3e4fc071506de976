"""Streaming state made explicit (converters/rewrite/tflite_state.py) and validated in steps
(converters/validation/state.py): a tiny stateful TFLite built here (a tf.Variable
accumulator with a non-zero initial value, which TFLite's converter turns into CALL_ONCE /
VAR_HANDLE / READ_VARIABLE / ASSIGN_VARIABLE), rewritten, and judged step by step against the
original, which keeps its variables across invoke(); a wrong feedback of the state fails."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest

STEPS = 8
INITIAL = np.array([[0.5, -1.0, 2.0, 0.25]], np.float32)


def _stateful_tflite(path):
    import tensorflow as tf

    class Accumulator(tf.Module):
        def __init__(self):
            super().__init__()
            self.acc = tf.Variable(INITIAL)
            self.count = tf.Variable(tf.constant([[3.0]]))

        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
        def __call__(self, x):
            new = self.acc * 0.75 + x
            self.acc.assign(new)
            self.count.assign(self.count + 1.0)
            return {"y": new * 2.0 + self.count}

    module = Accumulator()
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.__call__.get_concrete_function()], module)
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="module")
def stateful(tmp_path_factory):
    return _stateful_tflite(tmp_path_factory.mktemp("state") / "acc.tflite")


@pytest.fixture(scope="module")
def rewritten(stateful, tmp_path_factory):
    from converters.rewrite.tflite_state import ExplicitState

    new, n, info = ExplicitState.apply(stateful.read_bytes())
    path = tmp_path_factory.mktemp("state_rw") / "acc_stateless.tflite"
    path.write_bytes(new)
    return path, n, info


def _ops(data):
    from edge.tflite_model import TFLiteModel

    return {op.opcode for g in TFLiteModel(data).subgraphs for op in g.operators}


def test_the_tiny_model_has_the_pattern_and_the_rewrite_removes_it(stateful, rewritten):
    from converters.rewrite.tflite_state import ExplicitState

    assert {"CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"} <= _ops(stateful.read_bytes())
    assert ExplicitState.matches(stateful.read_bytes()) == 2
    path, n, info = rewritten
    assert n == 2
    assert not _ops(path.read_bytes()) & {"CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"}
    assert ExplicitState.matches(path.read_bytes()) == 0
    by_var = {r["variable"]: r for r in info["state"]}
    assert len(by_var) == 2
    acc = next(r for r in info["state"] if r["shape"] == [1, 4])
    assert acc["input"].startswith("state_") and acc["output"] == acc["input"] + "_out"
    np.testing.assert_array_equal(np.asarray(acc["initial"], np.float32), INITIAL)  # the model's own


def _interp(path):
    from tensorflow.lite.python.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    return it


def test_fed_back_by_hand_the_rewritten_model_matches_every_step(stateful, rewritten):
    path, _, info = rewritten
    a, b = _interp(stateful), _interp(path)
    bi = {d["name"]: d["index"] for d in b.get_input_details()}
    bo = {d["name"]: d["index"] for d in b.get_output_details()}
    state = {r["input"]: np.asarray(r["initial"], r["dtype"]) for r in info["state"]}
    x_name = next(n for n in bi if not n.startswith("state_"))
    y_name = next(n for n in bo if not n.startswith("state_"))
    rng = np.random.default_rng(1)
    for _ in range(STEPS):
        x = rng.normal(size=(1, 4)).astype(np.float32)
        a.set_tensor(a.get_input_details()[0]["index"], x)
        a.invoke()
        b.set_tensor(bi[x_name], x)
        for k, v in state.items():
            b.set_tensor(bi[k], v)
        b.invoke()
        np.testing.assert_array_equal(a.get_tensor(a.get_output_details()[0]["index"]),
                                      b.get_tensor(bo[y_name]))
        state = {r["input"]: b.get_tensor(bo[r["output"]]).copy() for r in info["state"]}


def _validate(stateful, path, record):
    from converters.artefact import Artefact
    from converters.validation.validate import ValidateOptions, validate

    opts = ValidateOptions()
    opts.samples = STEPS
    return validate(Artefact(str(stateful), "tflite", {}),
                    [Artefact(str(path), "tflite", {"state": record})], opts)


def test_stepped_validation_passes_with_the_state_fed_back(stateful, rewritten):
    path, _, info = rewritten
    report = _validate(stateful, path, info["state"])
    assert report.passed, report.summary_line()
    assert f"{STEPS} steps in sequence, state fed back" in report.summary_line()
    assert f"{STEPS} steps in sequence, state fed back" in report.inputs
    # every step's state is compared too: the original's read from what it assigned
    compared = {o.name: o for o in report.results[0].comparison.outputs}
    states = {r["output"] for r in info["state"]}
    assert states < set(compared), sorted(compared)
    assert all(compared[n].role == "raw" and compared[n].max_abs == 0 for n in states)


def _zeroed(record):
    for r in record:
        r["initial"] = np.zeros(r["shape"]).tolist()


def _not_fed_back(record):
    for r in record:
        r["output"] = None


def _shifted(record):
    for r in record:
        r["initial"] = (np.asarray(r["initial"]) + 1.0).tolist()


def _swapped_steps(record):   # the count's feedback read from the wrong output
    acc = next(r for r in record if r["shape"] == [1, 4])
    count = next(r for r in record if r is not acc)
    count["initial"] = (np.asarray(count["initial"]) * 0).tolist()


@pytest.mark.parametrize("mutate", [_zeroed, _not_fed_back, _shifted, _swapped_steps],
                         ids=["initial values zeroed", "state not fed back", "initial values shifted",
                              "one variable's initial value wrong"])
def test_a_wrong_state_feedback_fails_validation(stateful, rewritten, mutate):
    path, _, info = rewritten
    record = copy.deepcopy(info["state"])
    mutate(record)
    report = _validate(stateful, path, record)
    assert not report.passed, f"{mutate.__name__}: {report.summary_line()}"


def test_the_stateful_source_restarts_from_its_initial_state_on_each_run(stateful):
    """The noise floor and each converted model run the samples again: the source must start
    over each time (a fresh interpreter), or the steps would not line up."""
    from converters.artefact import Artefact
    from converters.validation.runners import runner_for
    from converters.validation.validate import _run_all

    class Samples:
        def feed(self, s, metas, spec, raw):
            return {metas[0].name: s}

    r = runner_for(Artefact(str(stateful), "tflite", {}), device="cpu")
    r.activate()
    xs = [np.full((1, 4), i, np.float32) for i in range(4)]
    first = _run_all(r, Samples(), xs, lambda _: None)
    again = _run_all(r, Samples(), xs, lambda _: None)
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])
    r.deactivate()


def test_convert_to_onnx_validates_in_steps_against_the_original(stateful, tmp_path, capsys):
    from tests.conftest import run_cli

    before = stateful.read_bytes()
    code, out, err = run_cli(capsys, "convert", stateful, "--to", "onnx,ort", "-o", tmp_path, "--json")
    assert code == 0, err
    hops = json.loads(out)["models"][0]["artefacts"]
    assert all(h["validation"]["passed"] is True for h in hops), hops
    assert all("steps in sequence, state fed back" in h["validation"]["summary"] for h in hops)
    side = json.loads((tmp_path / "acc.ort.edgeport.json").read_text())
    assert len(side["state"]) == 2   # carried to the hop after the rewrite: how to feed it back
    for r in side["state"]:
        assert r["feed"] == (f"first call: {r['input']} = initial; then pass {r['output']} as "
                             f"{r['input']} on the next call")
    assert stateful.read_bytes() == before
    code, out, err = run_cli(capsys, "convert", stateful, "--to", "onnx", "-o", tmp_path / "off",
                             "--no-rewrite")
    assert code != 0 and "CALL_ONCE" in err


def test_convert_to_tflite_gives_the_stateless_tflite_validated_in_steps(stateful, tmp_path, capsys):
    """`--to tflite` of a stateful TFLite: its stateless rewrite as an artefact of its own (any
    TFLite interpreter runs it), judged in steps against the original, with the sidecar's
    `state` record saying how to feed it back."""
    from converters.options import ConvertOptions
    from converters.pipeline import planned_outputs
    from tests.conftest import run_cli

    # the files checked before any work (never an input of the run) are the ones written
    assert planned_outputs(str(stateful), ["tflite"], ConvertOptions(), str(tmp_path)) == [
        str(tmp_path / "acc_stateless_float.tflite"), str(tmp_path / "acc_stateless_float.tflite.edgeport.json")]
    before = stateful.read_bytes()
    code, out, err = run_cli(capsys, "convert", stateful, "--to", "tflite", "-o", tmp_path, "--json")
    assert code == 0, err
    (hop,) = json.loads(out)["models"][0]["artefacts"]
    assert hop["model"].endswith("acc_stateless_float.tflite") and hop["format"] == "tflite"
    assert hop["target"] == "tflite" and hop["status"] == "converted"
    assert hop["validation"]["passed"] is True, hop["validation"]
    assert "steps in sequence, state fed back" in hop["validation"]["summary"]
    made = tmp_path / "acc_stateless_float.tflite"
    assert not _ops(made.read_bytes()) & {"CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"}
    side = json.loads((tmp_path / "acc_stateless_float.tflite.edgeport.json").read_text())
    assert len(side["state"]) == 2 and all(r["feed"].startswith("first call: ") for r in side["state"])
    assert stateful.read_bytes() == before


def test_convert_to_tflite_fails_a_stateless_tflite_whose_record_is_wrong(stateful, tmp_path, capsys,
                                                                         monkeypatch):
    """The stateless TFLite's hop is validated in steps for real: the rewrite recording wrong
    initial values makes it fail (exit 1), not pass."""
    from converters.rewrite.tflite_state import ExplicitState
    from tests.conftest import run_cli

    real = ExplicitState.apply

    def wrong_initial(model_bytes, options=None):
        new, n, info = real(model_bytes, options)
        _zeroed(info["state"])
        return new, n, info

    monkeypatch.setattr(ExplicitState, "apply", staticmethod(wrong_initial))
    code, out, err = run_cli(capsys, "convert", stateful, "--to", "tflite", "-o", tmp_path, "--json")
    assert code == 1, err
    (hop,) = json.loads(out)["models"][0]["artefacts"]
    assert hop["validation"]["passed"] is False, hop["validation"]


MICRO_SPEECH = Path(__file__).resolve().parents[2] / "data" / "micro_speech"


def _micro(name):
    import os

    root = Path(os.environ.get("EDGEPORT_CORPUS") or Path(__file__).resolve().parents[3] / ".cache" / "corpus")
    path = root / f"{name}.tflite"
    if not path.is_file():   # fetched as the corpus tests fetch it (they may run later)
        from tests.corpus.test_corpus import fetch_or_reason

        _, why = fetch_or_reason()
        if why or not path.is_file():
            pytest.skip(why or f"{path} is not in the corpus")
    return path


def _source_scores(path, xs):
    """The stateful original's wake-word score at each step (its variables kept): the same
    function the script that made the features reports them with."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
    from make_micro_speech import scores

    return scores(path, xs)


@pytest.mark.corpus
@pytest.mark.parametrize("mutate", [None, _zeroed, _not_fed_back],
                         ids=["as rewritten", "initial values zeroed", "state not fed back"])
@pytest.mark.parametrize("name", ["micro_alexa", "micro_hey_jarvis", "micro_okay_nabu"])
def test_micro_wakeword_rewritten_tflite_judged_in_steps_on_speech(tmp_path, name, mutate):
    """pymicro-wakeword's models (int8, six variables) on speech that says their wake word
    (tests/data/micro_speech, scripts/make_micro_speech.py): the source's score rises from 0
    to above 0.8 as the word is said; the rewritten TFLite itself, fed its state back, equals
    the stateful original at every step; fed wrongly, it fails. (Its variables are buffers of
    the last 2-20 steps' activations: an initial value off by one int8 step is flushed within
    20 steps and rightly passes, the score equal at every step.)"""
    from converters.artefact import Artefact
    from converters.rewrite.tflite_state import ExplicitState
    from converters.validation.signature import InputOverrides, load_data
    from converters.validation.validate import ValidateOptions, validate

    source = _micro(name)
    data_path = MICRO_SPEECH / f"{name}.npz"
    data = load_data(str(data_path))
    (xs,) = data.values()
    scores = _source_scores(source, xs)
    assert scores[: len(xs) // 2].max() < 0.05 and scores.max() > 0.8, scores   # speech, then the word
    new, n, info = ExplicitState.apply(source.read_bytes())
    assert n == 6
    path = tmp_path / f"{name}_stateless.tflite"
    path.write_bytes(new)
    record = copy.deepcopy(info["state"])
    if mutate is not None:
        mutate(record)
    opts = ValidateOptions()
    opts.input_overrides = InputOverrides(data=data, data_path=str(data_path))
    report = validate(Artefact(str(source), "tflite-int8", {}),
                      [Artefact(str(path), "tflite-int8", {"state": record})], opts)
    assert f"{len(xs)} steps in sequence, state fed back" in report.summary_line()
    if mutate is None:
        assert report.passed, report.summary_line()
        compared = {o.name: o.max_abs for o in report.results[0].comparison.outputs}
        assert sum(name.startswith("state_") for name in compared) == 6 and max(compared.values()) == 0
    else:
        assert not report.passed, report.summary_line()


@pytest.mark.parametrize("mutate", [None, _zeroed], ids=["as rewritten", "initial values zeroed"])
def test_a_source_runtime_that_cannot_show_its_state_is_compared_on_its_outputs(
        stateful, rewritten, monkeypatch, mutate):
    """Without experimental_preserve_all_tensors the original's variables cannot be read back:
    the state is then left out on both sides, and the outputs still decide every step."""
    import converters.validation.state as state

    monkeypatch.setattr(state, "_keep_all_tensors", lambda runner: False)
    path, _, info = rewritten
    record = copy.deepcopy(info["state"])
    if mutate is not None:
        mutate(record)
    report = _validate(stateful, path, record)
    compared = {o.name for o in report.results[0].comparison.outputs}
    assert not any(name.startswith("state_") for name in compared), compared
    assert report.passed is (mutate is None), report.summary_line()
