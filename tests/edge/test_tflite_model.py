import pytest

from edge.errors import ModelFormatError
from edge.tflite_model import TFLiteModel


def test_reads_tiny_models(tiny):
    m = TFLiteModel.load(tiny["uint8"])
    assert m.op_names() == ["QUANTIZE", "MEAN", "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE"]
    (inp,) = m.inputs()
    assert inp.shape == (1, 16, 16, 3) and inp.dtype == "UINT8"
    assert inp.quantization.scale == [0.0078125] and inp.quantization.zero_point == [128]
    assert not m.is_edgetpu_compiled()
    assert TFLiteModel.load(tiny["nchw"]).inputs()[0].shape == (1, 3, 16, 16)


def test_reads_coral_models(coral):
    plain = TFLiteModel.load(coral / "mobilenet_v1_0.25_128_quant.tflite")
    compiled = TFLiteModel.load(coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")
    assert len(plain.op_names()) == 31 and "CONV_2D" in plain.op_names()
    assert not plain.is_edgetpu_compiled()
    assert compiled.is_edgetpu_compiled() and compiled.op_names() == ["edgetpu-custom-op"]
    assert plain.outputs()[0].shape == (1, 1001)
    posenet = TFLiteModel.load(coral / "posenet_mobilenet_v1_075_353_481_16_quant_decoder_edgetpu.tflite")
    assert posenet.custom_ops() == ["PosenetDecoderOp", "edgetpu-custom-op"]
    assert "min_runtime_version" in plain.metadata
    assert plain.metadata_bytes("min_runtime_version").rstrip(b"\0")


def test_not_tflite():
    with pytest.raises(ModelFormatError, match="not a TFLite model"):
        TFLiteModel(b"\x00" * 64, "zeros")


def test_every_truncation_is_a_clean_error(tiny):
    data = tiny["uint8"].read_bytes()
    for n in range(0, len(data), 7):
        try:
            TFLiteModel(data[:n], "cut")
        except ModelFormatError:
            pass


def test_folder_and_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="is a folder"):
        TFLiteModel.load(tmp_path)
    with pytest.raises(ModelFormatError, match="cannot read"):
        TFLiteModel.load(tmp_path / "nope.tflite")


def test_public_buffer_count_and_operator_options(tiny, coral):
    """What converters read from a model goes through the public API (no _Table, _read, _buffers)."""
    m = TFLiteModel.load(coral / "mobilenet_v1_0.25_128_quant.tflite")
    assert m.buffer_count > max(t.buffer for t in m.main.tensors)
    conv = {"stride_w": (1, "<i"), "stride_h": (2, "<i"), "fused_activation": (3, "<b"),
            "dilation_w": (4, "<i")}
    depthwise = dict(conv, fused_activation=(4, "<b"), dilation_w=(5, "<i"))
    ops = m.main.operators
    assert ops[0].opcode == "CONV_2D" and ops[1].opcode == "DEPTHWISE_CONV_2D"
    # MobileNet v1: a stride-2 first convolution, then a stride-1 depthwise one, all ReLU6 (3)
    assert m.operator_options(0, 0, conv, {"dilation_w": 1}) == {"stride_w": 2, "stride_h": 2, "fused_activation": 3,
                                              "dilation_w": 1}
    assert m.operator_options(0, 1, depthwise)["stride_w"] == 1
    assert m.operator_options(0, 3, depthwise)["stride_w"] == 2
    # a field the table does not hold takes its default
    fc = TFLiteModel.load(tiny["float"])
    assert fc.main.operators[1].opcode == "FULLY_CONNECTED"
    assert fc.operator_options(0, 1, {"fused_activation": (0, "<b"), "absent": (30, "<i")},
                               {"absent": 7}) == {"fused_activation": 0, "absent": 7}
