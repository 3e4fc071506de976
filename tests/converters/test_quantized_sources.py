"""Quantized sources to float targets: a route through onnx2tf is refused before any hop runs
(it would keep a float TFLite with a transposed integer input and garbage outputs); the routes
that keep the quantized graph (ONNX, ORT) convert and validate, the integer input's
parameters carried in the sidecar from hop to hop."""

import os
from pathlib import Path

import pytest

from converters import pipeline
from converters.options import ConvertOptions
from edge.errors import InputError

CORAL = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "coral"
V1 = CORAL / "mobilenet_v1_0.25_128_quant.tflite"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def uint8_onnx(path):
    """An ONNX whose image input is uint8 NHWC (as tf2onnx writes a quantized TFLite)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Relu", ["f"], ["y"])]
    g = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 8, 8, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 3])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


def test_integer_input_onnx_to_tflite_is_refused_before_any_hop(tmp_path, monkeypatch):
    from converters import toolenv

    monkeypatch.setattr(toolenv, "ensure", lambda *a, **k: pytest.fail("onnx2tf must not run"))
    src = uint8_onnx(tmp_path / "q.onnx")
    with pytest.raises(InputError, match=r"quantized.*'image' UINT8") as e:
        pipeline.convert_model(src, ["tflite"], ConvertOptions(quiet=True), outdir=tmp_path / "out")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not V1.is_file(), reason="Coral fixtures not found")
def test_coral_uint8_to_float_tflite_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    from converters import toolenv

    monkeypatch.setattr(toolenv, "ensure", lambda *a, **k: pytest.fail("onnx2tf must not run"))
    with pytest.raises(InputError, match=r"quantized.*UINT8"):
        pipeline.convert_model(V1, ["tflite"], ConvertOptions(quiet=True), outdir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not V1.is_file(), reason="Coral fixtures not found")
def test_coral_uint8_to_tflite_and_ort_makes_ort_and_refuses_tflite(tmp_path, monkeypatch):
    from converters import toolenv

    monkeypatch.setattr(toolenv, "ensure", lambda *a, **k: pytest.fail("onnx2tf must not run"))
    # with a preprocessing spec the hops are fed images: the .ort is validated against the
    # .onnx, whose uint8 input has no parameters of its own (tf2onnx drops them); the sidecar
    # keeps the source's, so the ORT hop validates instead of "failed to run"
    opts = ConvertOptions(quiet=True, preprocessing={"mean": [127.5], "std": [127.5]})
    r = pipeline.convert_model(V1, ["tflite", "ort"], opts, outdir=tmp_path)
    assert "tflite" in r.refused and "quantized" in r.refused["tflite"]
    assert [h["format"] for h in r.hops] == ["onnx", "ort"]
    for hop in r.hops:
        assert hop["validation"]["passed"] is True, hop
