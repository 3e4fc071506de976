"""Model input signature: --input-shapes, --val-range, --data; int64,
bool and scalar inputs; open dimensions never silently 1."""

import json

import numpy as np
import pytest

from converters.validation.runners.base import tensor_meta
from converters.validation.signature import InputOverrides, parse_input_shapes, parse_shape, parse_val_ranges, resolve
from edge.errors import InputError
from tests.conftest import run_cli


def test_parse_shapes_and_ranges():
    assert parse_input_shapes(["x:[1,3,640,640]", "other:[1,512]"]) == {
        "x": (1, 3, 640, 640), "other": (1, 512)}
    assert parse_input_shapes(["[1,3,224,224]"]) == {None: (1, 3, 224, 224)}
    assert parse_input_shapes(["sr:[]"]) == {"sr": ()}
    assert parse_input_shapes(["serving_default_x:0:[1,16]"]) == {"serving_default_x:0": (1, 16)}
    assert parse_input_shapes(["a:[1,2] b:[3]"]) == {"a": (1, 2), "b": (3,)}
    assert parse_shape("1x3x8x8") == (1, 3, 8, 8)
    assert parse_val_ranges(["sr:[16000,16000]", "[-1,1]"]) == {"sr": (16000.0, 16000.0),
                                                                None: (-1.0, 1.0)}
    for bad in ("x:[1,a]", "x:[0,3]"):
        with pytest.raises(InputError):
            parse_input_shapes([bad])
    with pytest.raises(InputError):
        parse_val_ranges(["x:[2,1]"])


def test_resolve_names_every_placeholder():
    metas = [tensor_meta("x", (-1, 3, -1, -1), np.float32), tensor_meta("sr", (), np.int64),
             tensor_meta("state", (2, -1, 128), np.float32)]
    sig = resolve(metas)
    assert [m.shape for m in sig.metas] == [(1, 3, 224, 224), (), (2, 32, 128)]
    assert set(sig.placeholders) == {"x", "state"}
    assert any("--input-shapes x:[1,3,224,224]" in n for n in sig.notes)
    sig = resolve(metas, InputOverrides.parse(["x:[1,3,640,640]", "state:[2,1,128]"]))
    assert sig.placeholders == {}
    assert [s.shape_from for s in sig.inputs] == ["user", "model", "user"]
    with pytest.raises(InputError, match="does not fit"):
        resolve(metas, InputOverrides.parse(["x:[1,1,640,640]"]))
    with pytest.raises(InputError, match="single-input"):
        resolve(metas, InputOverrides.parse(["[1,3,8,8]"]))
    with pytest.raises(InputError, match="names no input 'y'"):
        resolve(metas, InputOverrides.parse(["y:[1]"]))


def test_open_batch_alone_is_not_a_placeholder():
    sig = resolve([tensor_meta("x", (-1, 76, 32, 1), np.float32)])
    assert sig.metas[0].shape == (1, 76, 32, 1)
    assert sig.placeholders == {} and sig.inputs[0].shape_from == "batch"


@pytest.fixture(scope="module")
def vad_like(tmp_path_factory):
    """An ONNX model like silero-vad: input [batch, samples] float, sr int64 scalar,
    flag bool [1]; it needs one sample of 16 values (a Reshape to [1, 4, 4])."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "samples"])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    flag = helper.make_tensor_value_info("flag", TensorProto.BOOL, [1])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])
    nodes = [
        helper.make_node("Constant", [], ["shape"], value=helper.make_tensor(
            "shape", TensorProto.INT64, [3], [1, 4, 4])),
        helper.make_node("Reshape", ["input", "shape"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["s"], keepdims=0),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["s", "srf"], ["m"]),
        helper.make_node("Cast", ["flag"], ["ff"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["m", "ff"], ["mm"]),
        helper.make_node("Unsqueeze", ["mm", "ax"], ["u"]),
        helper.make_node("Expand", ["u", "es"], ["out"]),
    ]
    inits = [helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
             helper.make_tensor("es", TensorProto.INT64, [2], [1, 4])]
    g = helper.make_graph(nodes, "vad_like", [x, sr, flag], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path_factory.mktemp("sig") / "vad_like.onnx"
    onnx.save(m, str(path))
    return path


def test_validate_says_when_shapes_are_placeholders(vad_like, capsys):
    code, out, err = run_cli(capsys, "validate", vad_like, vad_like)
    # placeholder [1, 32] does not fit the Reshape to [-1, 4, 4]: exit 2, naming the fix
    assert code == 2, out + err
    assert "--input-shapes" in err and "placeholder" in err


def test_validate_with_user_shapes_int64_scalar_and_bool(vad_like, capsys):
    code, out, err = run_cli(capsys, "validate", vad_like, vad_like, "--input-shapes",
                             "input:[1,16]", "--val-range", "sr:[16000,16000]", "--json")
    assert code == 0, out + err
    rep = json.loads(out)
    assert rep["placeholder_shapes"] == {} and rep["verdict_note"] is None
    ins = {i["name"]: i for i in rep["input_signature"]["inputs"]}
    assert ins["input"]["shape"] == [1, 16] and ins["input"]["shape_from"] == "user"
    assert ins["sr"]["shape"] == [] and ins["sr"]["dtype"] == "int64"
    assert ins["flag"]["dtype"] == "bool"


def test_validate_placeholder_verdict_in_text_and_json(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "open.onnx"
    onnx.save(m, str(path))
    code, out, err = run_cli(capsys, "validate", path, path)
    assert code == 0
    assert "PASSED (on placeholder input shapes (x:[1, 3, 224, 224])" in out
    code, out, err = run_cli(capsys, "validate", path, path, "--json")
    rep = json.loads(out)
    assert rep["placeholder_shapes"] == {"x": [1, 3, 224, 224]}
    assert "placeholder" in rep["verdict_note"]
    code, out, err = run_cli(capsys, "validate", path, path, "--input-shapes", "[1,3,64,48]")
    assert code == 0 and "placeholder input shapes" not in out and "[1, 3, 64, 48] (user)" in out


def test_validate_with_data_file(vad_like, tmp_path, capsys):
    data = tmp_path / "audio.npz"
    rng = np.random.default_rng(1)
    np.savez(data, input=rng.uniform(-1, 1, (3, 1, 16)).astype(np.float32),
             sr=np.array(16000, np.int64), flag=np.array([True]))
    code, out, err = run_cli(capsys, "validate", vad_like, vad_like, "--data", data)
    assert code == 0, out + err
    assert "3 samples from audio.npz" in out
    code, out, err = run_cli(capsys, "validate", vad_like, vad_like, "--data", tmp_path / "none.npz")
    assert code == 2 and "--data" in err


def test_bench_table_shows_input_shapes(vad_like, capsys):
    code, out, err = run_cli(capsys, "bench", vad_like, "--runs", "2", "--warmup", "0",
                             "--input-shapes", "input:[1,16]")
    assert code == 0, out + err
    assert "input:1x16 (user)" in out and "sr:scalar" in out
    code, out, err = run_cli(capsys, "bench", vad_like, "--runs", "2", "--warmup", "0")
    assert code == 2 and "placeholder" in err and "--input-shapes" in err


@pytest.fixture(scope="module")
def two_arg_script(tmp_path_factory):
    torch = pytest.importorskip("torch")

    class Gain(torch.nn.Module):
        def forward(self, x, sr: int):
            return x * float(sr) / 1000.0

    path = tmp_path_factory.mktemp("ts") / "gain.pt"
    torch.jit.script(Gain()).save(str(path))
    return path


def test_torchscript_forward_with_an_int_argument(two_arg_script, capsys):
    p = two_arg_script
    code, out, err = run_cli(capsys, "validate", p, p, "--trust-pickle", "--input-shapes",
                             "x:[1,8]", "--arg", "sr=16000")
    assert code == 0, out + err
    assert "input x float32[1,8]" in out
    code, out, err = run_cli(capsys, "validate", p, p, "--trust-pickle", "--input-shapes", "x:[1,8]")
    assert code == 2 and "argument 'sr' (int)" in err and "--arg sr=VALUE" in err
    code, out, err = run_cli(capsys, "validate", p, p, "--trust-pickle", "--arg", "sr=16000")
    assert code == 2 and "argument 'x'" in err and "--input-shapes x:" in err
    code, out, err = run_cli(capsys, "validate", p, p, "--trust-pickle", "--input-shapes", "x:[1,8]",
                             "--arg", "sr=fast")
    assert code == 2 and "takes a int value" in err
    code, out, err = run_cli(capsys, "check", p, "--trust-pickle")
    assert code == 0 and "forward(x: Tensor, sr: int)" in out
    code, out, err = run_cli(capsys, "convert", p, "--to", "onnx", "--trust-pickle", "-o",
                             p.parent / "out", "--input-shapes", "x:[1,8]")
    assert code == 2 and "argument 'sr' (int)" in err and "--arg sr=VALUE" in err
    code, out, err = run_cli(capsys, "convert", p, "--to", "onnx", "--trust-pickle", "-o",
                             p.parent / "out", "--input-shapes", "x:[1,8]", "--arg", "sr=16000")
    assert code == 0 and "validation ok" in out and "(sr=16000 fixed)" in out, out + err


def test_size_fills_open_nchw_image_dims(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from tests.conftest import CORAL

    if not CORAL.is_dir():
        pytest.skip(f"shared Coral fixtures (photos) not found at {CORAL}")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "nchw.onnx"
    onnx.save(m, str(path))
    code, out, err = run_cli(capsys, "validate", path, path, "--size", "48", "192", "--inputs", CORAL)
    assert code == 0, out + err
    assert "[1, 3, 48, 192] (size)" in out and "placeholder" not in out


def test_named_dims_link_inputs():
    metas = [tensor_meta("input", (-1, -1), np.float32), tensor_meta("state", (2, -1, 128), np.float32),
             tensor_meta("sr", (), np.int64)]
    names = {"input": ["batch", "samples"], "state": [None, "batch", None], "sr": []}
    sig = resolve(metas, InputOverrides.parse(["input:[3,512]"]), dim_names=names)
    assert [m.shape for m in sig.metas] == [(3, 512), (2, 3, 128), ()]
    assert [s.shape_from for s in sig.inputs] == ["user", "linked", "model"]
    assert sig.placeholders == {}
    # a placeholder's made-up size carried to another input is still a placeholder
    names = {"a": ["n", "t"], "b": ["n", "t"]}
    sig = resolve([tensor_meta("a", (-1, -1), np.float32), tensor_meta("b", (-1, -1), np.float32)],
                  dim_names=names)
    assert [m.shape for m in sig.metas] == [(1, 32), (1, 32)]
    assert set(sig.placeholders) == {"a", "b"}
