"""The run context (edge/run.py) and folder mode's naming: no command writes over its inputs.

Each command declares its inputs and outputs in `files(args, run)`; one check refuses, before
any work, an output that is an input (by name, symbolic link, hard link, or as a model's
sidecar), a special file, or a path inside a source package. Folder mode refuses two sources
whose artefacts share a name, and a source that would write over a sibling source.
"""

import hashlib
import json
import os
import shutil

import pytest

from tests.conftest import DATA, run_cli


def _hashes(folder):
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            if os.path.isfile(p) and not os.path.islink(p):
                out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture
def models(tmp_path):
    a, b = tmp_path / "a.tflite", tmp_path / "b.tflite"
    shutil.copy(DATA / "color_float.tflite", a)
    shutil.copy(DATA / "color_int8.tflite", b)
    (tmp_path / "b.tflite.edgeport.json").write_text("{}\n")
    return a, b


def _manifests(tmp_path):
    m = tmp_path / "m1.json"
    m.write_text("{}\n")
    return m


# Every output flag of every command, against an input of the same run in each disguise.
CASES = [
    ("bench", lambda a, b, out: ["bench", a, b, "--runs", "1", "--warmup", "0", "--plot", out]),
    ("validate --report", lambda a, b, out: ["validate", a, b, "--samples", "1", "--report", out]),
    ("validate --junit", lambda a, b, out: ["validate", a, b, "--samples", "1", "--junit", out]),
    ("validate --save-outputs", lambda a, b, out: ["validate", a, b, "--samples", "1", "--save-outputs", out]),
]
DISGUISES = ["same name", "symlink", "hard link", "sidecar", "other spelling"]


@pytest.mark.parametrize("disguise", DISGUISES)
@pytest.mark.parametrize("name,argv", CASES, ids=[c[0] for c in CASES])
def test_an_output_that_is_an_input_is_refused_before_any_work(models, tmp_path, capsys, name, argv, disguise):
    a, b = models
    target = {"same name": b, "symlink": tmp_path / "link.out", "hard link": tmp_path / "hard.out",
              "sidecar": tmp_path / "b.tflite.edgeport.json",
              "other spelling": tmp_path / "." / "x" / ".." / "b.tflite"}[disguise]
    (tmp_path / "x").mkdir()
    if disguise == "symlink":
        os.symlink(b, target)
    elif disguise == "hard link":
        os.link(b, target)
    before = _hashes(tmp_path)
    code, out, err = run_cli(capsys, *argv(a, b, target))
    assert code == 2, (code, out, err)
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "never writes over an input" in err or "symbolic link" in err, err
    assert "benchmarking" not in err and out == ""  # refused before any model ran
    assert _hashes(tmp_path) == before


def test_manifest_merge_output_is_an_input(tmp_path, capsys):
    m = _manifests(tmp_path)
    os.link(m, tmp_path / "hard.json")
    before = _hashes(tmp_path)
    for out in (m, tmp_path / "hard.json"):
        code, _, err = run_cli(capsys, "manifest", "merge", m, "-o", out)
        assert code == 2 and "never writes over an input" in err, err
    assert _hashes(tmp_path) == before


def test_two_outputs_that_are_one_file_are_refused(models, tmp_path, capsys):
    a, b = models
    code, _, err = run_cli(capsys, "validate", a, b, "--report", tmp_path / "r", "--junit", tmp_path / "r")
    assert code == 2 and "one file cannot be both" in err, err
    assert not (tmp_path / "r").exists()


def test_no_write_inside_a_source_package(tmp_path, capsys):
    pkg = tmp_path / "tiny.mlpackage"
    shutil.copytree(DATA / "tiny.mlpackage", pkg)
    before = _hashes(tmp_path)
    code, _, err = run_cli(capsys, "validate", pkg, pkg, "--report", pkg / "report.json")
    assert code == 2 and "inside the source model package" in err, err
    assert _hashes(tmp_path) == before


def test_a_write_the_command_did_not_declare_is_refused(tmp_path):
    from converters.atomic import write_text_atomic
    from edge.errors import InputError
    from edge.run import Run

    (tmp_path / "in.txt").write_text("x")
    run = Run("edgeport test")
    run.input(tmp_path / "in.txt", "labels")
    run.output(tmp_path / "ok.json", "report")
    with run.active():
        write_text_atomic(tmp_path / "ok.json", "{}")
        with pytest.raises(InputError, match="did not declare"):
            write_text_atomic(tmp_path / "stray.json", "{}")
        with pytest.raises(InputError, match="never writes over an input"):
            run.output(tmp_path / "in.txt")
            run.guard_write(tmp_path / "in.txt")
    assert not (tmp_path / "stray.json").exists()
    write_text_atomic(tmp_path / "stray.json", "{}")  # no run active: library use is unchanged


def test_every_command_declares_its_files():
    import importlib

    from edgeport.cli import COMMANDS

    for name, module in COMMANDS.items():
        assert callable(getattr(importlib.import_module(module), "files", None)), name


# -- folder mode ---------------------------------------------------------------------------------
@pytest.fixture
def folder(tmp_path):
    """net.tflite beside the user's own net.onnx (not made by edgeport)."""
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(DATA / "color_float.tflite", d / "net.tflite")
    from tests.tiny_onnx import build

    build(str(d / "net.onnx"))
    return d


def test_folder_never_writes_over_a_sibling_source(folder, capsys):
    before = _hashes(folder)
    code, out, err = run_cli(capsys, "convert", folder, "--to", "ort", "--force")
    assert code == 2, (out, err)
    assert "net.tflite would write" in err and "source net.onnx" in err, err
    assert _hashes(folder) == before and sorted(os.listdir(folder)) == ["net.onnx", "net.tflite"]


def test_folder_refuses_two_sources_writing_one_artefact(folder, tmp_path, capsys):
    before = _hashes(folder)
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "convert", folder, "--to", "ort", "-o", out_dir)
    assert code == 2, (out, err)
    assert "net.onnx and net.tflite would both write" in err and "net.ort" in err, err
    assert not out_dir.exists() and _hashes(folder) == before


def test_folder_refuses_another_folders_model_of_the_same_name(tmp_path, capsys):
    d, out_dir = tmp_path / "two", tmp_path / "out"
    d.mkdir(), out_dir.mkdir()
    shutil.copy(DATA / "color_float.tflite", d / "m.tflite")
    state = {"m.tflite": {"sha256": "0" * 64, "options": "x", "format": "tflite", "routes": {},
                          "outputs": [str(out_dir / "m.onnx")], "source": str(tmp_path / "one" / "m.tflite")}}
    (out_dir / ".edgeport-convert.json").write_text(json.dumps(state))
    code, _, err = run_cli(capsys, "convert", d, "--to", "onnx", "-o", out_dir)
    assert code == 2 and "another model named m.tflite" in err, err


@pytest.mark.parametrize("out", ["/etc/hostname", "../x.onnx", "sub/../../x.onnx"])
def test_a_state_file_listing_outputs_outside_the_folder_is_refused(tmp_path, capsys, out):
    d, out_dir = tmp_path / "m", tmp_path / "out"
    d.mkdir(), out_dir.mkdir()
    shutil.copy(DATA / "color_float.tflite", d / "m.tflite")
    entry = {"sha256": hashlib.sha256((d / "m.tflite").read_bytes()).hexdigest(), "options": "x",
             "outputs": [out]}
    (out_dir / ".edgeport-convert.json").write_text(json.dumps({"m.tflite": entry}))
    code, _, err = run_cli(capsys, "convert", d, "--to", "onnx", "-o", out_dir)
    assert code == 2 and "was not written by edgeport" in err and "outside the output folder" in err, err
    assert os.listdir(out_dir) == [".edgeport-convert.json"]


@pytest.mark.parametrize("entry", [{"outputs": [7]}, {"evil": 1}, {"sha256": 5}])
def test_a_state_file_off_its_schema_counts_as_none(tmp_path, capsys, entry):
    d, out_dir = tmp_path / "m", tmp_path / "out"
    d.mkdir(), out_dir.mkdir()
    shutil.copy(DATA / "color_float.tflite", d / "m.tflite")
    (out_dir / ".edgeport-convert.json").write_text(json.dumps({"m.tflite": entry}))
    code, out, err = run_cli(capsys, "convert", d, "--to", "tflite", "-o", out_dir)
    assert code == 0 and "nothing to do" in out + err and "skipped" not in out, (out, err)


def test_folder_rerun_verifies_artefacts_against_their_sidecars(tmp_path, capsys):
    d, out_dir = tmp_path / "m", tmp_path / "out"
    d.mkdir()
    shutil.copy(DATA / "color_float.tflite", d / "a.tflite")
    shutil.copy(DATA / "color_int8.tflite", d / "b.tflite")
    code, out, err = run_cli(capsys, "convert", d, "--to", "onnx", "-o", out_dir, "--no-validate", "--quiet")
    assert code == 0, (out, err)
    shutil.copy(out_dir / "b.onnx", out_dir / "a.onnx")  # replaced by another model
    replaced = _hashes(out_dir)["a.onnx"]
    code, out, err = run_cli(capsys, "convert", d, "--to", "onnx", "-o", out_dir, "--no-validate", "--quiet")
    assert "a.tflite: unchanged" not in out, out
    assert "not the file its sidecar describes" in out and code == 2, (code, out, err)
    assert _hashes(out_dir)["a.onnx"] == replaced  # the user's file is not replaced either
    assert "b.tflite: unchanged since the last run, skipped" in out


@pytest.mark.parametrize("argv", [
    lambda t, a, b: ["manifest", "merge", t / "m1.json", "-o", t / "user.tflite"],
    lambda t, a, b: ["bench", a, "--runs", "1", "--warmup", "0", "--plot", t / "user.tflite"],
    lambda t, a, b: ["validate", a, b, "--samples", "1", "--report", t / "user.tflite"],
    lambda t, a, b: ["validate", a, b, "--samples", "1", "--junit", t / "user.tflite"],
    lambda t, a, b: ["validate", a, b, "--samples", "1", "--save-outputs", t / "user.tflite"],
], ids=["merge -o", "bench --plot", "validate --report", "validate --junit", "validate --save-outputs"])
def test_an_output_never_replaces_a_file_of_another_kind(models, tmp_path, capsys, argv):
    """A model that is not an input of the run is still not a report: it is not replaced."""
    a, b = models
    (tmp_path / "m1.json").write_text("{}\n")
    shutil.copy(DATA / "color_uint8.tflite", tmp_path / "user.tflite")
    before = _hashes(tmp_path)
    code, _, err = run_cli(capsys, *argv(tmp_path, a, b))
    assert code == 2 and "is not a" in err and "edgeport wrote" in err, err
    assert _hashes(tmp_path) == before


def test_an_output_of_its_own_kind_is_replaced(models, tmp_path, capsys):
    a, b = models
    report = tmp_path / "report.json"
    for _ in range(2):
        code, _, err = run_cli(capsys, "validate", a, b, "--samples", "1", "--report", report)
        assert code == 0, err
    assert json.loads(report.read_text())


def test_convert_refuses_an_artefact_that_is_another_input_before_any_work(tmp_path, capsys):
    """`--labels net.onnx` beside net.tflite: the ONNX artefact would replace the labels file."""
    shutil.copy(DATA / "color_float.tflite", tmp_path / "net.tflite")
    (tmp_path / "net.onnx").write_text("red\ngreen\nblue\ngray\n")
    before = _hashes(tmp_path)
    code, out, err = run_cli(capsys, "convert", tmp_path / "net.tflite", "--to", "onnx",
                             "--labels", tmp_path / "net.onnx", "--force")
    assert code == 2 and "is the labels file" in err and "never writes over an input" in err, err
    assert "converting" not in out + err  # refused before any work
    assert _hashes(tmp_path) == before
