"""`edgeport check`: ONNX checker + strict shape inference, TFLite structure, ORT, exit codes."""

import json
from pathlib import Path

import pytest

from edgeport.cli import main

CORAL = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "coral"


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    import onnx
    from onnx import TensorProto, helper

    d = tmp_path_factory.mktemp("check")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    good = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["h"], name="relu"),
                                                helper.make_node("Neg", ["h"], ["y"], name="neg")],
                                               "g", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 17)])
    good.ir_version = 8
    onnx.save(good, str(d / "good.onnx"))
    # a node reading a tensor nothing produces: the checker must refuse it
    bad = helper.make_model(helper.make_graph([helper.make_node("Relu", ["nowhere"], ["y"])],
                                              "g", [x], [y]),
                            opset_imports=[helper.make_opsetid("", 17)])
    bad.ir_version = 8
    onnx.save(bad, str(d / "dangling.onnx"))
    # shapes that contradict each other: strict shape inference must refuse it
    y3 = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    clash = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])],
                                                "g", [x], [y3]),
                              opset_imports=[helper.make_opsetid("", 17)])
    clash.ir_version = 8
    onnx.save(clash, str(d / "clash.onnx"))
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(d / "good.ort")
    so.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(d / "good.onnx"), so, providers=["CPUExecutionProvider"])
    return d


def test_good_onnx_passes_with_graph(onnx_models, capsys):
    assert main(["check", str(onnx_models / "good.onnx"), "--graph"]) == 0
    out = capsys.readouterr().out
    assert "ok   onnx.checker (full)" in out and "ok   shape inference (strict)" in out
    assert "[0] Relu relu: x -> h float32[1,4]" in out
    assert "[1] Neg neg: h -> y float32[1,4]" in out


def test_broken_onnx_fails(onnx_models, capsys):
    assert main(["check", str(onnx_models / "dangling.onnx")]) == 1
    assert "FAIL onnx.checker" in capsys.readouterr().out
    assert main(["check", str(onnx_models / "clash.onnx"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    failed = [c["check"] for c in data["checks"] if not c["ok"]]
    assert "shape inference (strict)" in failed and data["passed"] is False


def test_ort_loads(onnx_models, capsys):
    assert main(["check", str(onnx_models / "good.ort")]) == 0
    assert "ok   onnxruntime session" in capsys.readouterr().out


def test_not_a_model_is_a_usage_error(tmp_path, capsys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello, not a model" * 4)
    assert main(["check", str(junk)]) == 2
    assert main(["check", str(tmp_path / "missing.onnx")]) == 2
    assert "error:" in capsys.readouterr().err


def test_truncated_tflite_fails(tmp_path, capsys):
    src = CORAL / "mobilenet_v1_0.25_128_quant.tflite"
    if not src.is_file():
        pytest.skip(f"shared fixtures not found at {CORAL}")
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(src.read_bytes()[: 200_000])
    assert main(["check", str(cut)]) == 2     # unreadable: a load error, not a check failure
    assert "truncated or corrupt" in capsys.readouterr().err


@pytest.mark.skipif(not CORAL.is_dir(), reason=f"shared fixtures not found at {CORAL}")
def test_tflite_fixtures(capsys):
    assert main(["check", str(CORAL / "mobilenet_v1_0.25_128_quant.tflite"), "--graph"]) == 0
    out = capsys.readouterr().out
    assert "ok   tensors allocated" in out and "ok   buffers in bounds" in out
    assert "CONV_2D" in out and "SOFTMAX" in out
    # compiled: structure checked, allocation needs a TPU and is reported as skipped
    assert main(["check", str(CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "edgetpu" and data["custom_ops"] == ["edgetpu-custom-op"]
    # a custom op this runtime lacks: listed, and the allocation check fails
    code = main(["check", str(CORAL / "posenet_mobilenet_v1_075_353_481_16_quant_decoder.tflite")])
    out = capsys.readouterr().out
    assert code == 1 and "PosenetDecoderOp" in out and "FAIL tensors allocated" in out
