"""The HTML reports open in a real browser: no console errors, the key sections in the DOM,
a screenshot that is not blank, nothing fetched from outside, and model text escaped."""

import re

import numpy as np
import pytest

from browser import open_page
from conftest import DATA, REPO, run_cli


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
