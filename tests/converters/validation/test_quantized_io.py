"""Quantized I/O across formats: tf2onnx keeps a Coral uint8 TFLite's
uint8 input and output without quantization parameters; validation takes them from the
source, so a faithful conversion passes and a broken one still fails."""

import numpy as np
import pytest

from tests.conftest import run_cli

MODEL = "mobilenet_v1_0.25_128_quant.tflite"


@pytest.fixture(scope="module")
def converted(coral, tmp_path_factory):
    out = tmp_path_factory.mktemp("coral_onnx")
    from edgeport.cli import main

    code = main(["convert", str(coral / MODEL), "--to", "onnx,ort", "-o", str(out), "--quiet",
                 "--json"])
    return code, out


def test_coral_uint8_to_onnx_and_ort_validates(converted, capsys):
    code, out = converted
    capsys.readouterr()
    assert code == 0  # the convert step's own validation passed for both hops
    onnx_path = out / MODEL.replace(".tflite", ".onnx")
    ort_path = out / MODEL.replace(".tflite", ".ort")
    assert onnx_path.is_file() and ort_path.is_file()
    from tests.conftest import CORAL

    code, text, err = run_cli(capsys, "validate", CORAL / MODEL, onnx_path, ort_path)
    assert code == 0, text + err
    assert "with the source's parameters" in text
    assert "top-1 10/10" in text


def test_coral_uint8_broken_onnx_fails(converted, capsys, tmp_path):
    import onnx
    from onnx import numpy_helper

    code, out = converted
    m = onnx.load(str(out / MODEL.replace(".tflite", ".onnx")))
    # the classifier's weights, shuffled: same shapes and types, wrong numbers
    biggest = max(m.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    w = numpy_helper.to_array(biggest)
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(w.reshape(w.shape[0], -1), axis=0).reshape(w.shape)
    biggest.CopyFrom(numpy_helper.from_array(shuffled, biggest.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(m, str(broken))
    from tests.conftest import CORAL

    code, text, err = run_cli(capsys, "validate", CORAL / MODEL, broken, "--json")
    assert code == 1, text + err
    import json

    rep = json.loads(text)
    assert rep["models"][0]["status"] == "failed"


def test_coral_uint8_onnx_validates_on_photos(converted, capsys):
    from tests.conftest import CORAL

    code, out = converted
    capsys.readouterr()
    onnx_path = out / MODEL.replace(".tflite", ".onnx")
    code, text, err = run_cli(capsys, "validate", CORAL / MODEL, onnx_path, "--inputs", CORAL)
    assert code == 0, text + err  # was: "input 'input' is uint8 but has no quantization parameters"
    assert "3 images" in text and "top-1 3/3" in text


@pytest.mark.parametrize("dtype,borrowed", [(np.uint8, True), (np.int32, True), (np.float32, False)])
def test_integer_io_of_another_width_borrows_the_sources_parameters(dtype, borrowed):
    """The Core ML model of a uint8 ONNX holds its integers as int32 (Core ML has no 8-bit
    type): they are quantized and dequantized with the source's parameters as uint8 ones are;
    float I/O never borrows."""
    from converters.validation.runners.base import tensor_meta
    from converters.validation.validate import borrow_quantization

    class Fake:
        def __init__(self, dtype, scale):
            self.meta = [tensor_meta("x", (1, 4), dtype, scale, 3)]

        def input_metadata(self):
            return self.meta

        def output_metadata(self):
            return self.meta

    got = borrow_quantization(Fake(np.uint8, 0.5), Fake(dtype, 0.0))
    assert got == (({"x": (0.5, 3)}, {"x": (0.5, 3)}) if borrowed else ({}, {}))
