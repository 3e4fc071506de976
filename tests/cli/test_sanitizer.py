"""One text sanitizer at the output layer (edgeport/cli/output.py).

Strings from outside edgeport (model file names, tensor names, manifest fields, --data keys,
--device values, messages of upstream tools) carry ESC, OSC, BEL, CR and newlines into a
model built here; every command's text output must hold no raw control byte but its own
line ends, no line injected by a name, and --json stays one valid document.
"""

import json
import shutil

import numpy as np
import pytest

from tests.conftest import DATA, run_cli

# Same length as the names they replace in color_float.tflite (a flatbuffer string patched in place).
HOSTILE = "\x1b]0;PWN\x07\x1b[2J\r\nFAKE\x9b\x00"
IN_NAME, OUT_NAME = b"serving_default_image:0", b"StatefulPartitionedCall_1:0"


def _same_length(name, text=HOSTILE):
    raw = text.encode("utf-8")
    assert len(raw) <= len(name)
    return raw + b"_" * (len(name) - len(raw))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A TFLite whose tensor names and file name hold terminal escapes and newlines."""
    d = tmp_path_factory.mktemp("hostile")
    data = (DATA / "color_float.tflite").read_bytes()
    assert data.count(IN_NAME) == 1 and data.count(OUT_NAME) == 1
    data = data.replace(IN_NAME, _same_length(IN_NAME)).replace(OUT_NAME, _same_length(OUT_NAME))
    model = d / "m\x1b[31m\x07\nFAKE.tflite"
    model.write_bytes(data)
    other = d / "copy\x1b]8;;x\x07.tflite"
    shutil.copy(model, other)
    manifest = d / "m.json"
    sha = "0" * 64
    manifest.write_text(json.dumps({
        "schema": "edgeport-manifest/1", "shard": {"k": 1, "n": 1}, "folder_models": 1,
        "counts": {"converted": 0, "validated": 0, "refused": 1, "failed": 0},
        "models": [{"model": "x\x1b[2J\nFAKE.onnx", "sha256": sha, "outcome": "refused",
                    "reason": "boom\x1b]0;t\x07\r\nFAKE", "artefacts": []}]}))
    data_npz = d / "d.npz"
    np.savez(data_npz, **{"\x1b[2J\nFAKE": np.zeros((1, 16, 16, 3), np.float32)})
    return {"model": model, "other": other, "manifest": manifest, "data": data_npz, "dir": d}


def _clean(text):
    """The first raw control byte (other than a newline) in `text`, or a line a name injected."""
    for ch in text:
        o = ord(ch)
        if (o < 32 and ch != "\n") or 0x7F <= o < 0xA0:
            return f"raw control character {o:#x}"
    for line in text.splitlines():
        if line.startswith("FAKE"):
            return f"injected line {line!r}"
    return None


CASES = {
    "inspect": ["inspect", "{model}"],
    "inspect-json": ["inspect", "{model}", "--json"],
    "check": ["check", "{model}"],
    "check-json": ["check", "{model}", "--json"],
    "validate": ["validate", "{model}", "{other}", "--samples", "1"],
    "validate-json": ["validate", "{model}", "{other}", "--samples", "1", "--json"],
    "validate-data-key": ["validate", "{model}", "{other}", "--data", "{data}"],
    "bench": ["bench", "{model}", "--runs", "1", "--warmup", "0"],
    "bench-device": ["bench", "{model}", "--runs", "1", "--device", "\x1b[2J\nFAKE"],
    "convert-missing": ["convert", "{dir}/gone\x1b[2J\nFAKE.onnx", "--to", "ort"],
    "convert-refused": ["convert", "{model}", "--to", "tflite-int8"],
    "classify-missing": ["classify", "-m", "{model}", "-i", "{dir}/no\x1b]0;x\x07\nFAKE.png"],
    "manifest": ["manifest", "merge", "{manifest}"],
    "manifest-json": ["manifest", "merge", "{manifest}", "--json"],
    "parse-error": ["bench", "{model}", "--runs", "\x1b[2J\nFAKE"],
    "unknown-flag": ["check", "{model}", "--\x1b[2J\nFAKE"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_no_raw_control_character_reaches_the_terminal(hostile, capsys, name):
    argv = [a.format(**{k: str(v) for k, v in hostile.items()}) for a in CASES[name]]
    code, out, err = run_cli(capsys, *argv)
    assert "internal error" not in err, err
    for stream, text in (("stdout", out), ("stderr", err)):
        problem = _clean(text)
        assert problem is None, f"{stream}: {problem}\n{text!r}"
    if "--json" in argv:
        json.loads(out)  # one valid document


def test_upstream_messages_with_ansi_codes_are_escaped(capsys, monkeypatch):
    """A message from an upstream tool (PyTorch's refusals carry ANSI colours) is escaped
    whichever way it reaches the output: an error line, a warning, a plain print."""
    import sys

    import edgeport.cli.check as check
    from edge.errors import InputError

    def run(args):
        print("\x1b[1mtorch says\x1b[0m\nFAKE")
        print("warning: \x1b[33mcareful\x1b[0m", file=sys.stderr)
        raise InputError("\x1b[31mERROR\x1b[0m: bad\nFAKE")

    monkeypatch.setattr(check, "run", run)
    # the stand-in command lives in this test module, which the quiet layer (edge.console)
    # would count as a third-party tool and hide: this test is about the sanitizer alone
    monkeypatch.setenv("EDGEPORT_VERBOSE", "1")
    code, out, err = run_cli(capsys, "check", str(DATA / "color_float.tflite"))
    assert code == 2
    assert _clean(out) is None and _clean(err) is None, (out, err)
    assert "\\x1b[31mERROR" in err and len(err.strip().splitlines()) == 2


def test_help_keeps_its_lines(capsys):
    code, out, err = run_cli(capsys, "validate", "--help")
    assert code == 0 and len(out.splitlines()) > 20 and "\\n" not in out


# -- the sanitizer keeps edgeport's own line breaks: no command's text output shows '\x0a' ------
def _own_text_outputs(tmp_path):
    m = str(DATA / "color_float.tflite")
    return {"inspect": ["inspect", m, "--edgetpu"], "check": ["check", m],
            "validate": ["validate", m, str(DATA / "color_int8.tflite")],
            "bench": ["bench", m, str(DATA / "color_int8.tflite"), "--runs", "2"]}


@pytest.mark.parametrize("command", ["inspect", "check", "validate", "bench"])
def test_multi_line_text_keeps_its_line_breaks(tmp_path, capsys, command):
    code, out, err = run_cli(capsys, *_own_text_outputs(tmp_path)[command])
    assert "\\x0a" not in out and "\\x0a" not in err, (out, err)
    assert len(out.splitlines()) >= 2
