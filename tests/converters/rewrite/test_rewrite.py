"""Graph rewrites (converters/rewrite): each on a tiny model built here, validated against it,
applied by the planner only before a conversion whose tool refuses the pattern."""

import json

import numpy as np
import pytest


def _sparse_tflite(path):
    """A tiny conv + dense TFLite whose weights are 90% zeros, stored sparse behind DENSIFY ops
    (TFLiteConverter's EXPERIMENTAL_SPARSITY, as MediaPipe's sparse detectors ship)."""
    import tensorflow as tf

    inp = tf.keras.Input((8, 8, 4), batch_size=1)
    x = tf.keras.layers.Conv2D(16, 3, padding="same")(inp)
    x = tf.keras.layers.Flatten()(tf.keras.layers.ReLU()(x))
    model = tf.keras.Model(inp, tf.keras.layers.Dense(10)(x))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:
            k, b = layer.get_weights()
            layer.set_weights([(k * (rng.random(k.shape) < 0.1)).astype(np.float32), b + 0.1])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    return _sparse_tflite(tmp_path_factory.mktemp("rewrite") / "sparse.tflite")


def _run(model_bytes, x):
    from tensorflow.lite.python.interpreter import Interpreter

    it = Interpreter(model_content=bytes(model_bytes))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return [it.get_tensor(o["index"]) for o in it.get_output_details()]


def test_densify_becomes_dense_constants_with_the_same_outputs(sparse):
    from converters.rewrite.tflite import Densify

    original = sparse.read_bytes()
    assert Densify.matches(original) == 2
    dense, count = Densify.apply(original)
    assert count == 2 and Densify.matches(dense) == 0
    x = np.random.default_rng(1).uniform(-1, 1, (1, 8, 8, 4)).astype(np.float32)
    for a, b in zip(_run(original, x), _run(dense, x)):
        np.testing.assert_array_equal(a, b)
    assert Densify.apply(dense)[:2] == (dense, 0)     # nothing to do on a dense model


def test_planner_applies_a_rewrite_only_before_a_tool_that_refuses_it(sparse, tmp_path):
    from converters import rewrite
    from converters.artefact import Artefact
    from converters.options import ConvertOptions
    from converters.registry import load_registry

    reg = load_registry()
    src = Artefact(str(sparse), "tflite", {})
    for key, wanted in ((("tflite", "onnx"), ["rewrote 2 DENSIFY into dense constants"]),
                        (("tflite", "tflite-int8"), ["rewrote 2 DENSIFY into dense constants"]),
                        (("onnx", "ort"), [])):
        for no_rewrite in (False, True):
            with rewrite.prepare(src if key[0] == "tflite" else Artefact(str(sparse), "onnx", {}),
                                 reg[key], ConvertOptions(no_rewrite=no_rewrite)) as (given, lines, _):
                assert lines == ([] if no_rewrite else wanted), key
                assert (given.path == str(sparse)) == (not lines)   # the source is never written
    # a dense model needs nothing: the source itself is converted
    from converters.rewrite.tflite import Densify

    dense = tmp_path / "dense.tflite"
    dense.write_bytes(Densify.apply(sparse.read_bytes())[0])
    with rewrite.prepare(Artefact(str(dense), "tflite", {}), reg[("tflite", "onnx")],
                         ConvertOptions()) as (given, lines, _):
        assert lines == [] and given.path == str(dense)


def test_every_rewrite_names_conversions_that_exist():
    from converters import rewrite
    from converters.registry import load_registry
    from converters.rewrite.tflite_state import STATELESS

    # and the one hop that is no registered route: a stateful TFLite's stateless copy (--to tflite)
    names = {c.name for c in load_registry().values()} | set(STATELESS)
    rws = rewrite.rewrites()
    assert rws
    for rw in rws:
        assert rw.needed_by and set(rw.needed_by) <= names, rw.name
        assert rw.describe(3) and "{" not in rw.describe(3)


def test_sparse_tflite_converts_to_onnx_and_validates_against_the_original(sparse, tmp_path, capsys):
    from tests.conftest import run_cli

    before = sparse.read_bytes()
    code, out, err = run_cli(capsys, "convert", sparse, "--to", "onnx", "-o", tmp_path, "--json")
    assert code == 0, err
    hop = json.loads(out)["models"][0]["artefacts"][0]
    assert hop["validation"]["passed"] is True
    assert hop["rewrites"] == ["rewrote 2 DENSIFY into dense constants"]
    side = json.loads((tmp_path / "sparse.onnx.edgeport.json").read_text())
    assert side["rewrites"] == ["rewrote 2 DENSIFY into dense constants"]
    assert side["source"]["file"] == "sparse.tflite"
    import hashlib

    assert side["source"]["sha256"] == hashlib.sha256(before).hexdigest()
    assert sparse.read_bytes() == before
    code, out, err = run_cli(capsys, "convert", sparse, "--to", "onnx", "-o", tmp_path / "off",
                             "--no-rewrite")
    assert code != 0 and "DENSIFY" in err


# -- ONNX: an input that decides an If, pinned by --val-range NAME:[v,v] -----------------------
def _if_onnx(path):
    """y = If(mode == 16000, then: x * 2 reshaped by its own Shape (nested If on the shape's
    rank), else: x - 1); `mode` is an int64 scalar input, as silero-vad's sample rate."""
    import onnx
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT

    def const(name, value, dtype=np.int64):
        return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(
            np.array(value, dtype), name))

    inner_then = helper.make_graph([helper.make_node("Reshape", ["t2", "tshape"], ["r"])],
                                   "inner_then", [], [helper.make_tensor_value_info("r", f32, ["batch", 8])])
    inner_else = helper.make_graph([helper.make_node("Identity", ["t2"], ["r"])],
                                   "inner_else", [], [helper.make_tensor_value_info("r", f32, ["batch", 8])])
    then = helper.make_graph(
        [const("two", 2.0, np.float32), helper.make_node("Mul", ["x", "two"], ["t2"]),
         helper.make_node("Shape", ["t2"], ["tshape"]), helper.make_node("Size", ["tshape"], ["rank"]),
         const("two_i", 2), helper.make_node("Equal", ["rank", "two_i"], ["is2"]),
         helper.make_node("If", ["is2"], ["y_then"], then_branch=inner_then, else_branch=inner_else)],
        "then", [], [helper.make_tensor_value_info("y_then", f32, ["batch", 8])])
    other = helper.make_graph([const("one", 1.0, np.float32), helper.make_node("Sub", ["x", "one"], ["y_else"])],
                              "else", [], [helper.make_tensor_value_info("y_else", f32, ["batch", 8])])
    graph = helper.make_graph(
        [const("rate", 16000), helper.make_node("Equal", ["mode", "rate"], ["cond"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)],
        "if_on_input", [helper.make_tensor_value_info("x", f32, ["batch", 8]),
                        helper.make_tensor_value_info("mode", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", f32, ["batch", 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def if_model(tmp_path_factory):
    return _if_onnx(tmp_path_factory.mktemp("rewrite_onnx") / "switch.onnx")


def _options(shapes=None, ranges=None, **kw):
    from converters.options import ConvertOptions
    from converters.validation.signature import InputOverrides

    o = ConvertOptions(**kw)
    o.input_overrides = InputOverrides.parse(shapes, ranges) if (shapes or ranges) else None
    return o


def _ort(model, feed):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.mark.parametrize("mode", [16000, 8000])
def test_pinned_input_becomes_a_constant_and_every_if_is_folded(if_model, mode):
    import onnx

    from converters.rewrite.onnx import FixInputsFoldIf

    model = onnx.load(str(if_model))
    opts = _options(["x:[1,8]"], [f"mode:[{mode},{mode}]"])
    new, count, info = FixInputsFoldIf.apply(model, opts)
    onnx.checker.check_model(new)
    assert count == (2 if mode == 16000 else 1)      # the nested If on the shape's rank too
    assert info["fixed_arguments"] == {"mode": str(mode)}
    assert not [n for n in new.graph.node if n.op_type == "If"]
    assert [i.name for i in new.graph.input] == ["x"]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 8)).astype(np.float32)
    want = _ort(model, {"x": x, "mode": np.array(mode, np.int64)})
    np.testing.assert_array_equal(_ort(new, {"x": x})[0], want[0])
    assert model.graph.node[-1].op_type == "If"       # the source model is left as it was


def test_if_is_left_alone_unless_the_input_is_pinned_to_one_value(if_model):
    import onnx

    from converters.rewrite.onnx import FixInputsFoldIf

    model = onnx.load(str(if_model))
    for opts in (_options(), _options(["x:[1,8]"], ["mode:[8000,16000]"]), _options(None, ["x:[0,0]"])):
        assert FixInputsFoldIf.apply(model, opts) == (model, 0, {})


def test_onnx_with_an_if_converts_to_coreml_validated_against_the_original(if_model, tmp_path, capsys):
    from tests.conftest import run_cli

    flags = ["--input-shapes", "x:[1,8]", "--val-range", "mode:[16000,16000]", "x:[-1,1]"]
    code, out, err = run_cli(capsys, "convert", if_model, "--to", "coreml", "-o", tmp_path, "--json",
                             *flags)
    assert code == 0, err
    hop = json.loads(out)["models"][0]["artefacts"][0]
    assert hop["validation"]["passed"] is True, hop
    assert hop["fixed_arguments"] == {"mode": "16000"}
    assert hop["rewrites"] == ["fixed mode=16000 and folded 2 If with a constant condition (4 constant nodes)"]
    code, out, err = run_cli(capsys, "convert", if_model, "--to", "coreml", "-o", tmp_path / "off",
                             "--no-rewrite", *flags)
    assert code != 0 and "If" in err


# -- ONNX: an LSTM onnx2tf cannot take, unrolled into its gate arithmetic -----------------------
def _lstm_onnx(direction="forward", steps=3):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    dirs, hidden, size = (2 if direction == "bidirectional" else 1), 5, 4
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, s).astype(np.float32), n) for n, s in
             (("W", (dirs, 4 * hidden, size)), ("R", (dirs, 4 * hidden, hidden)), ("B", (dirs, 8 * hidden)))]
    node = helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["y", "yh", "yc"],
                            hidden_size=hidden, direction=direction)
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [node], "lstm", [helper.make_tensor_value_info("x", f32, [steps, 1, size]),
                         helper.make_tensor_value_info("h0", f32, [dirs, 1, hidden]),
                         helper.make_tensor_value_info("c0", f32, [dirs, 1, hidden])],
        [helper.make_tensor_value_info("y", f32, [steps, dirs, 1, hidden]),
         helper.make_tensor_value_info("yh", f32, [dirs, 1, hidden]),
         helper.make_tensor_value_info("yc", f32, [dirs, 1, hidden])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("steps", [1, 3])
def test_lstm_unrolls_into_gate_ops_with_the_same_outputs(steps):
    import onnx

    from converters.rewrite.onnx import UnrollLSTM

    model = _lstm_onnx(steps=steps)
    assert UnrollLSTM.matches(model) == 1
    new, count, info = UnrollLSTM.apply(model)
    onnx.checker.check_model(new)
    assert count == 1 and info == {"steps": steps}
    assert "LSTM" not in {n.op_type for n in new.graph.node}
    rng = np.random.default_rng(3)
    feed = {"x": rng.normal(0, 1, (steps, 1, 4)).astype(np.float32),
            "h0": rng.normal(0, 0.3, (1, 1, 5)).astype(np.float32),
            "c0": rng.normal(0, 0.3, (1, 1, 5)).astype(np.float32)}
    for want, got in zip(_ort(model, feed), _ort(new, feed)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_an_lstm_the_unrolling_does_not_cover_is_left_alone():
    from converters.rewrite.onnx import UnrollLSTM

    model = _lstm_onnx("bidirectional")
    assert UnrollLSTM.apply(model)[:2] == (model, 0)


def test_converted_inputs_match_the_source_by_unmangled_name():
    """onnx2tf names the inputs of the TFLite it makes from a folded silero-vad
    'serving_default_state:0', 'serving_default_input:0', in an order of its own: each is fed
    the source input of its name, not the one at its position."""
    from converters.validation.data import match_inputs
    from converters.validation.runners.base import TensorMeta

    def meta(name):
        return TensorMeta(name, (1,), "float32", 0.0, 0, None)

    ref = [meta("input"), meta("state"), meta("sr")]
    assert match_inputs(ref, [meta("serving_default_state:0"), meta("serving_default_input:0")]) == [1, 0]
    assert match_inputs(ref, [meta("state"), meta("x")]) == [1, 1]   # no name: by position, as before


def test_every_registered_rewrite_names_its_pattern_and_its_line():
    """The refusal under --no-rewrite names what the tool refuses (`pattern`), and the sidecar,
    report and progress line say what was rewritten (`describe`): every rewrite has both."""
    from converters.registry import conversions
    from converters.rewrite import REWRITE_MODULES, rewrites

    rws = rewrites()
    assert {rw.impl.__module__ for rw in rws} == set(REWRITE_MODULES)
    from converters.rewrite.tflite_state import STATELESS

    # the stateless copy of a streaming TFLite (--to tflite) is the one hop outside the registry
    names = {c.name for c in conversions()} | set(STATELESS)
    for rw in rws:
        assert isinstance(getattr(rw.impl, "pattern", None), str) and rw.impl.pattern, rw.name
        assert "{n}" in rw.impl.describe or "{fixed}" in rw.impl.describe, rw.name
        assert rw.needed_by and set(rw.needed_by) <= names, (rw.name, rw.needed_by)
