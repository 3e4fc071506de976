"""The HTML reports open in a real browser: no console errors, the key sections in the DOM,
a screenshot that is not blank, nothing fetched from outside, and model text escaped."""

import re

import numpy as np
import pytest

from tests.browser import open_page
from tests.conftest import DATA, REPO, run_cli


def _check_page(path, must_have):
    html = path.read_text()
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html), "a report must not fetch anything"
    dom, errors, pixels = open_page(path)
    assert errors == [], errors
    for text in must_have:
        assert text in dom, f"{text!r} not in the DOM"
    assert pixels is not None and pixels.std() > 5, "the screenshot is blank"
    # more than the header: below it, ink (text, tables, pictures) on at least 1% of the page
    body = pixels[120:].astype(int)
    assert (np.abs(body - 255).sum(-1) > 90).mean() > 0.01
    return dom


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_edgetpu_report_draws_the_op_strip_and_the_first_cpu_op(coral, tmp_path, capsys):
    report = tmp_path / "edgetpu.html"
    code, _, err = run_cli(capsys, "inspect", coral / "posenet_mobilenet_v1_075_353_481_16_quant_decoder.tflite",
                           "--edgetpu", "--report", report)
    assert code == 0, err
    dom = _check_page(report, ["Edge TPU mapping", "First op on the CPU", "PosenetDecoderOp",
                               "what would keep it on the Edge TPU", "Provenance"])
    assert dom.count("<rect") >= 38          # one cell per op of the model
    assert 'fill="#d1495b"' in dom          # the decoder op, on the CPU


def test_bench_report(tmp_path, capsys):
    report = tmp_path / "bench.html"
    code, _, err = run_cli(capsys, "bench", DATA / "color_float.tflite", DATA / "color_int8.tflite",
                           "--runs", "5", "--report", report)
    assert code == 0, err
    _check_page(report, ["Summary", "Latency", "color_int8.tflite", "<svg", "median"])


def test_model_text_is_escaped_in_reports():
    from converters.validation.html import inspect_page

    hostile = '<img src=x onerror=alert(1)>\x1b]0;owned\x07'
    d = {"model": hostile, "format": "tflite", "size_bytes": 1, "operators": 1, "custom_ops": [hostile],
         "inputs": [{"name": hostile, "shape": [1], "dtype": "FLOAT32", "quantization": None}],
         "outputs": [], "op_counts": {hostile: 1}}
    html = inspect_page(d)
    assert "<img src=x" not in html and "\x1b" not in html and "\x07" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;\\x1b]0;owned\\x07" in html


@pytest.mark.parametrize("flag_owner", ["bench", "inspect"])
def test_report_flag_is_declared(flag_owner):
    from edgeport.cli import build_parser

    sub = build_parser(only=flag_owner)._subparsers._group_actions[0].choices[flag_owner]
    assert any("--report" in a.option_strings for a in sub._actions)
    assert REPO.exists()


def _classifier_pair(tmp_path):
    """A Keras colour classifier and an int8 twin calibrated on the wrong range: the top-1
    differs on some photos."""
    import keras

    from tests.converters.validation.test_validate_runners import (
        LABELS,
        SPEC,
        calibration_arrays,
        color_images,
        color_keras,
        tflite_from_keras,
        with_sidecar,
    )

    keras.utils.set_random_seed(0)
    km = color_keras()
    km.save(str(tmp_path / "color.keras"))
    flat, _ = color_images(tmp_path / "images")
    cal = calibration_arrays(flat)
    tflite_from_keras(km, tmp_path / "color_int8_wrong.tflite", [c * np.float32(0.02) for c in cal])
    for name in ("color.keras", "color_int8_wrong.tflite"):
        with_sidecar(tmp_path / name, preprocessing=SPEC, labels=LABELS)
    return tmp_path / "color.keras", tmp_path / "color_int8_wrong.tflite", flat


def test_classifier_report_shows_the_photos_where_top1_differs(tmp_path, capsys):
    src, art, images = _classifier_pair(tmp_path)
    report = tmp_path / "classifier.html"
    code, _, err = run_cli(capsys, "validate", src, art, "--inputs", images, "--report", report)
    assert code == 1, err                      # the wrong-range int8 fails
    dom = _check_page(report, ["Summary", "top-1 differs on", "source:", "artefact:",
                               "error histogram of"])
    assert dom.count('<div class="fig">') >= 1


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_detector_report_draws_both_sets_of_boxes(tmp_path, capsys):
    from tests.converters.validation.test_roles import _keras_packed_detector
    from tests.tiny_tf import make_images

    src = _keras_packed_detector(tmp_path / "det.keras")
    photos = make_images(tmp_path / "photos", n=6)
    code, _, err = run_cli(capsys, "convert", src, "--to", "tflite", "--size", "16", "16", "--mean", "0",
                           "--std", "255", "-o", tmp_path / "out")
    assert code == 0, err
    report = tmp_path / "detector.html"
    code, _, err = run_cli(capsys, "validate", src, tmp_path / "out" / "det_float.tflite", "--inputs", photos,
                           "--size", "16", "16", "--mean", "0", "--std", "255", "--report", report)
    dom = _check_page(report, ["Summary", "output0 (detection)", "detections on sample 0", "source",
                               "artefact", "recall"])
    assert dom.count('<div class="fig">') >= 1


from tests.converters.edgetpu.test_edgetpu_compile import standin  # noqa: E402,F401  (the stand-in compiler fixture)


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_convert_report_of_an_edge_tpu_model_draws_predicted_and_compiled_strips(coral, standin, tmp_path, capsys):  # noqa: F811 (the imported fixture)
    """convert --to edgetpu with the tests' STAND-IN compiler (not Coral's): the report holds the
    artefact with its verdict, and the op strip as predicted and as the compiler placed the ops."""
    src = tmp_path / "posenet.tflite"
    src.write_bytes((coral / "posenet_mobilenet_v1_075_353_481_16_quant_decoder.tflite").read_bytes())
    report = tmp_path / "convert.html"
    code, _, err = run_cli(capsys, "convert", src, "--to", "edgetpu", "--compiler", "local",
                           "--accept-unvalidated", "-o", tmp_path / "out", "--report", report)
    assert code == 0, err
    dom = _check_page(report, ["Summary", "posenet_edgetpu.tflite", "Edge TPU mapping", "predicted",
                               "compiler", "PosenetDecoderOp"])
    assert dom.count("<rect") >= 2 * 38          # two strips, one cell per op each
    assert (report.stat().st_mode & 0o777) == 0o644 or (report.stat().st_mode & 0o044)
