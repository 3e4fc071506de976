"""One JSON contract for every command's --json.

Every command prints exactly one JSON object on stdout, beginning with the envelope
`command`, `edgeport_version`, `exit_code` (equal to the process exit status), and naming the
same things the same way: `model` for a model's path, `models` for one entry per model,
`size_bytes` for sizes, an `_ms` suffix for times in milliseconds. No NaN or infinity.
"""

import json
import os
import shutil

import pytest

from edgeport import __version__
from tests.conftest import DATA, run_cli

ENVELOPE = ["command", "edgeport_version", "exit_code"]
# Names the contract replaced: a model path is `model`, a size `size_bytes`, a time `*_ms`.
FORBIDDEN = {"path", "file", "filename", "size", "bytes", "seconds", "secs", "time", "duration"}
MULTI_MODEL = {"bench", "convert", "validate", "eval", "manifest"}
NO_MODEL = {"toolenv"}  # about tool environments, not models


def _no_nan(text):
    raise AssertionError(f"{text} in JSON output")


def _keys(node, where=""):
    """(dotted location, key, value) of every key in a JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{where}.{k}", k, v
            yield from _keys(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _keys(v, f"{where}[{i}]")


def check_contract(command, code, out):
    """The parsed document, after checking the whole contract on it."""
    doc = json.loads(out, parse_constant=_no_nan)  # the whole of stdout: one JSON value
    assert isinstance(doc, dict), f"{command} --json printed a {type(doc).__name__}, not one object"
    assert list(doc)[:3] == ENVELOPE, list(doc)
    assert doc["command"] == command
    assert doc["edgeport_version"] == __version__
    assert doc["exit_code"] == code
    for where, key, value in _keys(doc):
        assert key not in FORBIDDEN, f"{command}: {where} (use model / size_bytes / *_ms)"
        if key == "source":
            assert not isinstance(value, str), f"{command}: {where} is a path: name it 'model'"
        if "size" in key and isinstance(value, int) and not isinstance(value, bool):
            assert key == "size_bytes", f"{command}: {where}"
        if key.endswith("_ms"):
            values = value if isinstance(value, list) else [value]
            assert all(v is None or isinstance(v, (int, float)) for v in values), f"{command}: {where}"
        if key == "model":
            assert isinstance(value, str) and value, f"{command}: {where}"
    if command in NO_MODEL:
        pass
    elif command in MULTI_MODEL:
        assert isinstance(doc["models"], list) and doc["models"], doc
        assert all(isinstance(m.get("model"), str) for m in doc["models"])
    else:
        assert isinstance(doc["model"], str)
    return doc


def run_json(capsys, *argv):
    code, out, err = run_cli(capsys, *argv, "--json")
    assert out.strip(), f"no JSON on stdout (exit {code}): {err}"
    return code, check_contract(argv[0], code, out)


def test_classify(capsys, tiny, color_images):
    code, doc = run_json(capsys, "classify", "-m", tiny["int8"], "-i", color_images, "-c", "2")
    assert code == 0
    assert doc["model"] == str(tiny["int8"])
    assert len(doc["results"]) == 4 and all(len(r["inference_ms"]) == 2 for r in doc["results"])
    got = {os.path.basename(r["image"]): r["classes"][0]["id"] for r in doc["results"]}
    assert got == {"red.png": 0, "green.png": 1, "blue.png": 2, "gray.png": 3}


def test_bench(capsys, tiny):
    code, doc = run_json(capsys, "bench", tiny["float"], tiny["uint8"], "--runs", "2", "--warmup", "0")
    assert code == 0
    assert [m["model"] for m in doc["models"]] == [str(tiny["float"]), str(tiny["uint8"])]
    for m in doc["models"]:
        assert m["size_bytes"] == os.path.getsize(m["model"])
        assert m["runs"] == 2 and 0 < m["min_ms"] <= m["max_ms"]


def test_inspect(capsys, tiny):
    code, doc = run_json(capsys, "inspect", tiny["int8"], "--edgetpu")
    assert code == 0
    assert doc["model"] == str(tiny["int8"]) and doc["size_bytes"] == os.path.getsize(tiny["int8"])
    assert "edgetpu_prediction" in doc


def test_check(capsys, tiny):
    code, doc = run_json(capsys, "check", tiny["float"])
    assert code == 0 and doc["passed"] is True and doc["model"] == str(tiny["float"])
    assert all(c["ok"] for c in doc["checks"])


def test_validate_pass_and_failure(capsys, tiny):
    code, doc = run_json(capsys, "validate", tiny["float"], tiny["int8"], "--samples", "3")
    assert code == 0 and doc["passed"] is True
    assert doc["source"]["model"] == str(tiny["float"])
    assert [m["model"] for m in doc["models"]] == [str(tiny["int8"])]
    # int8 against float with float tolerances: a mismatch, exit status 1, and the envelope says so
    code, doc = run_json(capsys, "validate", tiny["float"], tiny["int8"], "--samples", "3",
                         "--mode", "numeric", "--atol", "1e-9", "--rtol", "0")
    assert code == 1 and doc["passed"] is False and doc["models"][0]["status"] == "failed"


def test_eval(capsys, tiny, color_images, tmp_path):
    for name in ("red", "green", "blue", "gray"):
        (tmp_path / "val" / name).mkdir(parents=True)
        shutil.copy(color_images / f"{name}.png", tmp_path / "val" / name / "a.png")
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\ngray\n")
    code, doc = run_json(capsys, "eval", tiny["float"], tiny["uint8"], "--images", tmp_path / "val",
                         "--labels", tmp_path / "labels.txt", "-k", "2", "--mean", "128", "--std", "128")
    assert code == 0 and doc["images"] == 4 and doc["classes"] == 4
    assert [m["model"] for m in doc["models"]] == [str(tiny["float"]), str(tiny["uint8"])]
    assert all(m["top1"] == 1.0 for m in doc["models"])


def _tiny_onnx(path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 8, 3])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2], keepdims=0),
                               helper.make_node("Softmax", ["m"], ["probs"], axis=1)], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def test_convert_file_and_folder_have_one_shape(capsys, tmp_path):
    src = _tiny_onnx(tmp_path / "src" / "tiny.onnx")
    code, one = run_json(capsys, "convert", src, "--to", "ort", "-o", tmp_path / "one")
    assert code == 0 and "folder" not in one
    code, many = run_json(capsys, "convert", tmp_path / "src", "--to", "ort", "-o", tmp_path / "many")
    assert code == 0 and many["folder"] == str(tmp_path / "src")
    for doc, outdir in ((one, "one"), (many, "many")):
        [m] = doc["models"]
        assert m["model"] == str(src) and m["status"] == "converted" and m["exit_code"] == 0
        [a] = m["artefacts"]
        assert a["model"] == str(tmp_path / outdir / "tiny.ort")
        assert a["size_bytes"] == os.path.getsize(a["model"]) and a["time_ms"] >= 0
    # the same keys in both, and in each artefact
    assert set(one["models"][0]) == set(many["models"][0])


def test_usage_errors_print_one_document(capsys, tiny):
    """A refused value is one error line on stderr; with --json, stdout is one envelope saying so."""
    code, out, err = run_cli(capsys, "bench", tiny["float"], "--runs", "nan", "--json")
    assert code == 2
    doc = json.loads(out)
    assert doc["exit_code"] == 2 and "--runs" in doc["error"]
    assert [line for line in err.splitlines() if line.startswith("error:")] == [err.strip()]


def test_emit_json_refuses_to_overwrite_the_envelope():
    from edgeport.cli.output import envelope

    with pytest.raises(ValueError):
        envelope("bench", 0, edgeport_version="9.9")
    assert envelope("bench", 1, t_ms=float("nan"))["t_ms"] is None


def test_manifest_merge(capsys, tmp_path):
    import shutil

    folder = tmp_path / "zoo"
    folder.mkdir()
    shutil.copy(DATA / "color_float.tflite", folder / "a.tflite")
    code, out, err = run_cli(capsys, "convert", folder, "--to", "onnx", "--shard", "1/1", "-o", tmp_path / "out",
                             "--quiet")
    assert code == 0, err
    manifests = sorted((tmp_path / "out").glob("edgeport-manifest.shard-*.json"))
    code, doc = run_json(capsys, "manifest", "merge", *manifests)
    assert code == 0 and doc["models"][0]["model"] == "a.tflite"


def test_toolenv(capsys):
    code, doc = run_json(capsys, "toolenv")
    assert code == 0 and all("folder" in d for d in doc["toolenvs"])
