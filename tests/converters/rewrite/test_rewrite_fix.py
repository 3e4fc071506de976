"""--fix NAME=VALUE: an input turned into a constant on every route (converters/rewrite/onnx_fix.py,
tflite_fix.py), folded where it decides an If, recorded like --arg, and validated against the
original source fed the same value."""

import json

import numpy as np
import pytest

from tests.converters.rewrite.test_rewrite import _if_onnx, _options, _ort


@pytest.fixture(scope="module")
def if_model(tmp_path_factory):
    return _if_onnx(tmp_path_factory.mktemp("fix_onnx") / "switch.onnx")


def _fix_options(fixed, shapes=("x:[1,8]",)):
    from converters.validation.signature import InputOverrides

    o = _options()
    o.input_overrides = InputOverrides.parse(list(shapes), None, None, None, list(fixed))
    return o


@pytest.mark.parametrize("text,value", [("sr=16000", 16000), ("w=[1,2.5]", [1, 2.5]), ("k=-3", -3),
                                        ("m=[[1,2],[3,4]]", [[1, 2], [3, 4]]), (" v = 0.5 ", 0.5)])
def test_fix_reads_a_number_or_a_json_list(text, value):
    from converters.validation.signature import parse_fixed

    name = text.split("=")[0].strip()
    assert parse_fixed([text]) == {name: value}


@pytest.mark.parametrize("text", ["sr", "=1", "sr=", "sr=x", "sr=nan", "sr=NaN", "sr=Infinity", "sr=1e400",
                                  "sr=1e31", "sr=[]", "sr=[1,[2]]", "sr=[1,\"a\"]", "sr={}", "sr=true",
                                  "sr=null", "sr=[[1,2],[3]]", "sr=" + "[" * 5000 + "1" + "]" * 5000,
                                  "sr=\x1b[31m"])
def test_fix_refuses_what_is_not_finite_numbers_in_one_line(text):
    from converters.validation.signature import parse_fixed
    from edge.errors import InputError

    with pytest.raises(InputError) as e:
        parse_fixed([text])
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)
    with pytest.raises(InputError, match="twice"):
        parse_fixed(["a=1", "a=2"])


@pytest.mark.parametrize("mode", [16000, 8000])
def test_fixed_input_becomes_a_constant_and_its_if_is_folded(if_model, mode):
    import onnx

    from converters.rewrite.onnx_fix import FixInputs

    model = onnx.load(str(if_model))
    opts = _fix_options([f"mode={mode}"])
    assert FixInputs.matches(model, opts) == 1 and FixInputs.matches(model, _options()) == 0
    new, count, info = FixInputs.apply(model, opts)
    onnx.checker.check_model(new)
    assert count == 1 and info["fixed_arguments"] == {"mode": mode}
    assert info["ifs"] == (2 if mode == 16000 else 1)   # the nested If on the shape's rank too
    assert not [n for n in new.graph.node if n.op_type == "If"]
    assert [i.name for i in new.graph.input] == ["x"]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 8)).astype(np.float32)
    want = _ort(model, {"x": x, "mode": np.array(mode, np.int64)})
    np.testing.assert_array_equal(_ort(new, {"x": x})[0], want[0])
    assert [i.name for i in model.graph.input] == ["x", "mode"]   # the source is left as it was


def test_fixed_list_takes_the_inputs_shape_and_dtype(tmp_path):
    """A JSON list fixes a tensor input; a shorter one is broadcast; one that cannot fit is refused."""
    import onnx
    from onnx import TensorProto, helper

    from converters.rewrite.onnx_fix import FixInputs
    from edge.errors import InputError

    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "add",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for value, w in (("[1,2,3]", np.array([[1, 2, 3]] * 2, np.float32)), ("0.5", np.full((2, 3), 0.5, np.float32)),
                     ("[[1,2,3],[4,5,6]]", np.arange(1, 7, dtype=np.float32).reshape(2, 3))):
        new, count, _ = FixInputs.apply(model, _fix_options([f"w={value}"], ()))
        onnx.checker.check_model(new)
        assert [i.name for i in new.graph.input] == ["x"]
        np.testing.assert_array_equal(_ort(new, {"x": x})[0], x + w)
    with pytest.raises(InputError, match="does not fit"):
        FixInputs.apply(model, _fix_options(["w=[1,2]"], ()))


def test_onnx_fixed_input_converts_and_validates_against_the_original(if_model, tmp_path, capsys):
    from tests.conftest import run_cli

    flags = ["--input-shapes", "x:[1,8]", "--val-range", "x:[-1,1]", "--fix", "mode=16000"]
    code, out, err = run_cli(capsys, "convert", if_model, "--to", "ort,coreml", "-o", tmp_path, "--json",
                             *flags)
    assert code == 0, err
    arts = json.loads(out)["models"][0]["artefacts"]
    assert len(arts) == 2
    for hop in arts:
        assert hop["validation"]["passed"] is True, hop
        assert hop["fixed_arguments"] == {"mode": 16000}
        assert hop["rewrites"] == ["fixed mode=16000 as constants (folded 2 If, 4 constant nodes)"]
    side = json.loads((tmp_path / "switch.ort.edgeport.json").read_text())
    assert side["fixed_arguments"] == {"mode": 16000}
    assert side["rewrites"] == arts[0]["rewrites"]
    # validate feeds the source the fixed value; without it the source takes other modes
    ort_model = tmp_path / "switch.ort"
    code, out, err = run_cli(capsys, "validate", if_model, ort_model, "--input-shapes", "x:[1,8]",
                             "--val-range", "x:[-1,1]", "--fix", "mode=16000")
    assert code == 0, out + err
    code, out, err = run_cli(capsys, "validate", if_model, ort_model, "--input-shapes", "x:[1,8]",
                             "--val-range", "x:[-1,1]", "--fix", "mode=8000")
    assert code == 1, out + err
    # --no-rewrite cannot honour --fix: refused in one line
    code, out, err = run_cli(capsys, "convert", if_model, "--to", "ort", "-o", tmp_path / "off",
                             "--no-rewrite", *flags)
    assert code == 2 and "--fix" in err and "--no-rewrite" in err


# -- TFLite: the input tensor becomes a constant buffer ----------------------------------------
def _two_input_tflite(path):
    """y = x * gain + offset[k]: a float input `x`, a float scalar `gain`, an int32 index `k`."""
    import tensorflow as tf

    table = tf.constant([0.0, 10.0, 20.0])

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x"),
                                  tf.TensorSpec([], tf.float32, name="gain"),
                                  tf.TensorSpec([], tf.int32, name="k")])
    def f(x, gain, k):
        return {"y": x * gain + tf.gather(table, k)}

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="module")
def two_input(tmp_path_factory):
    return _two_input_tflite(tmp_path_factory.mktemp("fix_tflite") / "gain.tflite")


def _interp_run(model_bytes, feed):
    from tensorflow.lite.python.interpreter import Interpreter

    it = Interpreter(model_content=bytes(model_bytes))
    it.allocate_tensors()
    details = it.get_input_details()
    for d in details:
        key = next(k for k in feed if k in d["name"])
        it.set_tensor(d["index"], np.asarray(feed[key], d["dtype"]))
    it.invoke()
    return [d["name"] for d in details], it.get_tensor(it.get_output_details()[0]["index"])


def test_tflite_fixed_inputs_become_constant_buffers(two_input):
    from converters.rewrite.tflite_fix import FixInputs

    original = two_input.read_bytes()
    names, _ = _interp_run(original, {"x": np.zeros((1, 4)), "gain": 1, "k": 0})
    gain, k = (next(n for n in names if s in n) for s in ("gain", "k"))
    opts = _fix_options([f"{gain}=2.5", f"{k}=2"], ())
    assert FixInputs.matches(original, opts) == 2 and FixInputs.matches(original, _options()) == 0
    new, count, info = FixInputs.apply(original, opts)
    assert count == 2 and info["fixed_arguments"] == {gain: 2.5, k: 2}
    x = np.random.default_rng(4).uniform(-1, 1, (1, 4)).astype(np.float32)
    left, got = _interp_run(new, {"x": x})
    assert left == [n for n in names if n not in (gain, k)]
    np.testing.assert_allclose(got, x * 2.5 + 20.0, rtol=1e-6)
    assert two_input.read_bytes() == original


def test_tflite_fixed_input_converts_to_onnx_validated_against_the_original(two_input, tmp_path, capsys):
    from tests.conftest import run_cli

    names, _ = _interp_run(two_input.read_bytes(), {"x": np.zeros((1, 4)), "gain": 1, "k": 0})
    gain, k = (next(n for n in names if s in n) for s in ("gain", "k"))
    code, out, err = run_cli(capsys, "convert", two_input, "--to", "onnx", "-o", tmp_path, "--json",
                             "--fix", f"{gain}=2.5", f"{k}=1")
    assert code == 0, err
    hop = json.loads(out)["models"][0]["artefacts"][0]
    assert hop["validation"]["passed"] is True, hop
    assert hop["fixed_arguments"] == {gain: 2.5, k: 1}
    assert hop["rewrites"] == [f"fixed {gain}=2.5, {k}=1 as constants"]
    import onnx

    assert len(onnx.load(str(tmp_path / "gain.onnx")).graph.input) == 1


def test_fix_naming_no_input_is_refused_before_any_work(if_model, two_input, tmp_path, capsys):
    from converters.artefact import Artefact
    from converters.rewrite.fixing import check_fixed_names
    from edge.errors import InputError
    from tests.conftest import run_cli

    code, out, err = run_cli(capsys, "convert", if_model, "--to", "ort", "-o", tmp_path / "a",
                             "--input-shapes", "x:[1,8]", "--fix", "mode=1", "rate=2")
    assert code == 2 and "--fix names rate, which is not an input of the model (the inputs: x, mode)" in err
    assert not (tmp_path / "a" / "switch.ort").exists()
    code, out, err = run_cli(capsys, "convert", two_input, "--to", "onnx", "-o", tmp_path / "b", "--fix", "gainz=1")
    assert code == 2 and "--fix names gainz" in err
    with pytest.raises(InputError, match="ONNX and TFLite"):
        check_fixed_names(Artefact(str(tmp_path / "m.keras"), "keras", {}), _fix_options(["a=1"], ()))
    check_fixed_names(Artefact(str(tmp_path / "m.keras"), "keras", {}), _options())   # no --fix: nothing


@pytest.mark.parametrize("dtype,value,ok", [("int64", 16000, True), ("int64", 16000.5, False), ("int8", 127, True),
                                            ("int8", 128, False), ("uint8", -1, False), ("bool", 1, True),
                                            ("bool", 2, False), ("float32", 0.25, True), ("int32", [1, 2.5], False)])
def test_fixed_value_must_fit_the_inputs_dtype(dtype, value, ok):
    from converters.validation.signature import InputOverrides
    from edge.errors import InputError

    ov = InputOverrides(fixed={"v": value})
    if ok:
        got = ov.fixed_for("v", (2,), dtype)
        assert got.dtype == np.dtype(dtype) and got.tolist() == [np.dtype(dtype).type(value)] * 2
    else:
        with pytest.raises(InputError, match=f"is {np.dtype(dtype).name}"):
            ov.fixed_for("v", (2,), dtype)
