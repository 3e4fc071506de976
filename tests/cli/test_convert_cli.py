"""The `convert` command: route and artefact lines, --json, keep/--force, folder mode, errors."""

import json
import os
import shutil

import pytest

from tests.tiny_tf import LABELS, build_classifier, make_images


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert_cli")
    build_classifier(root / "net.keras")
    make_images(root / "cal", n=6)
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return root


def run(capsys, *argv):
    from edgeport.cli import main

    code = main(["convert", *[str(a) for a in argv]])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_route_artefacts_and_validation(src, tmp_path, capsys):
    code, out, err = run(capsys, src / "net.keras", "--to", "ort,tflite", "-o", tmp_path, "--json",
                         "--mean", "0", "--std", "255", "--labels", src / "labels.txt")
    assert code == 0, err
    doc = json.loads(out)  # stdout holds nothing but the JSON
    assert doc["command"] == "convert" and doc["exit_code"] == 0 and "folder" not in doc
    [d] = doc["models"]
    assert d["model"] == str(src / "net.keras")
    assert d["routes"] == {"ort": ["keras", "onnx", "ort"], "tflite": ["keras", "tflite"]}
    arts = {a["format"]: a for a in d["artefacts"]}
    assert set(arts) == {"onnx", "ort", "tflite"}, "the ONNX intermediate is an artefact too"
    for fmt, a in arts.items():
        assert os.path.getsize(a["model"]) == a["size_bytes"] > 0 and a["time_ms"] > 0
        assert os.path.exists(a["model"] + ".edgeport.json")
        v = a["validation"]
        assert v is not None and v["passed"] is not False, (fmt, v)
    assert os.path.basename(arts["tflite"]["model"]) == "net_float.tflite"
    assert (tmp_path / "net.required_operators.config").exists()


def test_text_output_keep_and_force(src, tmp_path, capsys):
    args = (src / "net.keras", "--to", "onnx", "-o", tmp_path, "--no-validate", "--quiet")
    code, out, _ = run(capsys, *args)
    assert code == 0
    assert "route onnx: keras -> onnx" in out
    assert "net.onnx  onnx" in out and " s" in out
    first = (tmp_path / "net.onnx").stat().st_mtime_ns
    code, out, _ = run(capsys, *args)
    assert code == 0 and "kept" in out
    assert (tmp_path / "net.onnx").stat().st_mtime_ns == first
    code, out, _ = run(capsys, *args, "--force")
    assert code == 0 and "kept" not in out


def test_int8_without_calibration_is_a_usage_error(src, tmp_path, capsys):
    code, out, err = run(capsys, src / "net.keras", "--to", "tflite-int8", "-o", tmp_path)
    assert code == 2
    assert "--calibration" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_unknown_target_and_missing_source(src, tmp_path, capsys):
    code, _, err = run(capsys, src / "net.keras", "--to", "tensorrt")
    assert code == 2 and "unknown target" in err
    code, _, err = run(capsys, tmp_path / "missing.keras", "--to", "onnx")
    assert code == 2 and "does not exist" in err


def test_failed_validation_exits_1_and_keeps_artefact(src, tmp_path, capsys, monkeypatch):
    import converters.pipeline.hop as pipeline  # _validate lives in the hop module

    monkeypatch.setattr(pipeline, "_validate",
                        lambda s, c, o: {"passed": False, "summary": "MISMATCH: forced by the test"})
    code, out, _ = run(capsys, src / "net.keras", "--to", "onnx", "-o", tmp_path, "--quiet")
    assert code == 1
    assert "validation FAILED" in out and "kept" in out
    assert (tmp_path / "net.onnx").exists()
    side = json.loads((tmp_path / "net.onnx.edgeport.json").read_text())
    assert side["validation"]["passed"] is False


@pytest.mark.slow
def test_folder_mode_parallel_and_skip_unchanged(src, tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(src / "net.keras", models / "a.keras")
    shutil.copy(src / "net.keras", models / "b.keras")
    (models / "README.txt").write_text("not a model")
    out_dir = tmp_path / "out"
    args = (models, "--to", "tflite", "-o", out_dir, "--jobs", "2", "--no-validate", "--json")
    code, out, err = run(capsys, *args)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["command"] == "convert" and doc["exit_code"] == 0 and doc["folder"] == str(models)
    res = {os.path.basename(r["model"]): r for r in doc["models"]}
    assert set(res) == {"a.keras", "b.keras"}
    assert all(r["status"] == "converted" for r in res.values())
    assert (out_dir / "a_float.tflite").exists() and (out_dir / "b_float.tflite").exists()
    code, out, _ = run(capsys, *args)
    assert [r["status"] for r in json.loads(out)["models"]] == ["skipped", "skipped"]
    # a changed source is converted again, an unchanged one is not
    from converters.artefact import sha256_of

    before = sha256_of(models / "b.keras")
    build_classifier(models / "b.keras")
    assert sha256_of(models / "b.keras") != before
    code, out, _ = run(capsys, *args)
    assert [r["status"] for r in json.loads(out)["models"]] == ["skipped", "converted"]
    # --force converts everything; so does a changed option
    code, out, _ = run(capsys, *args, "--force")
    assert [r["status"] for r in json.loads(out)["models"]] == ["converted", "converted"]
    code, out, _ = run(capsys, models, "--to", "tflite", "-o", out_dir, "--no-validate", "--json",
                       "--opset", "15")
    res = json.loads(out)["models"]
    assert [r["status"] for r in res] == ["converted", "converted"]
    assert [a["status"] for r in res for a in r["artefacts"]] == ["converted", "converted"]


def _parse(*argv):
    from edgeport.cli import build_parser

    return build_parser(only="convert").parse_args(["convert", "m.keras", "--to", "onnx", *argv])


def test_preprocessing_flags_make_one_dict_and_leave_args_alone():
    from edgeport.cli.args import preprocessing
    from edgeport.cli.convert import options_from_args

    args = _parse("--size", "96", "--mean", "127.5", "--std", "127.5", "1", "2", "--layout", "NCHW")
    before = dict(vars(args))
    assert preprocessing(args) == {"size": [96, 96], "mean": [127.5], "std": [127.5, 1.0, 2.0],
                                   "layout": "NCHW"}
    assert options_from_args(args).preprocessing == preprocessing(args)
    assert vars(args) == before, "preprocessing() must not rewrite args"
    assert preprocessing(_parse()) == {} and options_from_args(_parse()).preprocessing is None
    # a mean may be zero or negative; only NaN / inf are refused for it
    assert preprocessing(_parse("--mean", "0", "-1", "-2.5"))["mean"] == [0.0, -1.0, -2.5]


@pytest.mark.parametrize("flag,value", [("--std", "0"), ("--std", "-1"), ("--std", "nan"), ("--std", "inf"),
                                        ("--mean", "nan"), ("--mean", "inf"), ("--size", "0"),
                                        ("--size", "-3"), ("--jobs", "0"), ("--timeout", "0"),
                                        ("--timeout", "nan"), ("--calibration-count", "0"),
                                        ("--input-shape", "0"), ("--opset", "-1")])
def test_out_of_range_numbers_are_usage_errors(capsys, flag, value, tmp_path):
    from tests.conftest import DATA, run_cli

    code, out, err = run_cli(capsys, "convert", DATA / "color_float.tflite", "--to", "onnx", "-o", tmp_path,
                             f"{flag}={value}")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: argument {flag}: '{value}' ")
    assert os.listdir(tmp_path) == []
