"""Nothing untrusted runs: pickles, TorchScript, .pt2 and Keras Lambda layers are
refused without an explicit opt-in, and the compiler container is locked down.

The payloads are real: each would create a marker file when its code runs. The refusal
tests check the marker never appears; the opt-in tests check it does (so the payloads are
live and the refusal is what kept them from running).
"""

import os
import sys

import pytest

from tests.conftest import DATA, run_cli

FACTORY = """
import torch

def build():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
"""


class _Payload:
    """Unpickling this calls os.mkdir(marker): code from the file, run at load time."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    torch = pytest.importorskip("torch")
    d = tmp_path_factory.mktemp("torch_sec")
    (d / "nets.py").write_text(FACTORY)
    sys.path.insert(0, str(d))
    try:
        import importlib

        nets = importlib.import_module("nets")
        model = nets.build().eval()
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("nets", None)
    torch.save(model.state_dict(), d / "plain.pt")
    # A checkpoint that looks like a state dict but carries a payload.
    evil = dict(model.state_dict())
    evil["_extra"] = _Payload(str(d / "PWNED_pickle"))
    torch.save(evil, d / "evil.pt")
    torch.jit.save(torch.jit.script(model), d / "net.torchscript.pt")
    try:
        ep = torch.export.export(model, (torch.zeros(1, 3, 2, 2),))
        torch.export.save(ep, d / "net.pt2")
    except Exception:  # torch.export unavailable: the .pt2 case skips
        pass
    return d


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_state_dict_loads_with_weights_only(torch_files, tmp_path, capsys, monkeypatch):
    """A plain state dict converts, and torch.load was called with weights_only=True."""
    import torch

    calls = []
    real = torch.load

    def spy(*a, **kw):
        calls.append(kw.get("weights_only"))
        return real(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "convert", torch_files / "plain.pt", "--torch-model",
                                f"{torch_files / 'nets.py'}:build", "--input-shape", "1", "3", "2", "2",
                                "--to", "onnx", "-o", out, "--no-validate")
    assert code == 0, err
    assert calls and all(c is True for c in calls), calls
    assert (out / "plain.onnx").is_file()


def test_full_pickle_refused_without_trust(torch_files, tmp_path, capsys):
    marker = torch_files / "PWNED_pickle"
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "convert", torch_files / "evil.pt", "--torch-model",
                                f"{torch_files / 'nets.py'}:build", "--input-shape", "1", "3", "2", "2",
                                "--to", "onnx", "-o", out)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "--trust-pickle" in lines[0] and "code" in lines[0], err
    assert "Traceback" not in err
    assert not marker.exists(), "the pickle payload ran"
    assert not out.exists() or _files(out) == []


def test_full_pickle_payload_is_live(torch_files, tmp_path, capsys):
    """With --trust-pickle the same file does run its code: the refusal above is what stops it."""
    marker = torch_files / "PWNED_pickle"
    run_cli(capsys, "convert", torch_files / "evil.pt", "--torch-model", f"{torch_files / 'nets.py'}:build",
            "--input-shape", "1", "3", "2", "2", "--to", "onnx", "-o", tmp_path / "out", "--trust-pickle",
            "--no-validate")
    assert marker.exists()
    os.rmdir(marker)


@pytest.mark.parametrize("name, what", [("net.torchscript.pt", "TorchScript"), ("net.pt2", "torch.export")])
@pytest.mark.parametrize("command", ["convert", "validate"])
def test_torchscript_and_pt2_refused_before_loading(torch_files, tmp_path, capsys, monkeypatch, name, what,
                                                   command):
    import torch

    if not (torch_files / name).exists():
        pytest.skip(f"{name} could not be made with this torch")

    def never(*a, **kw):
        raise AssertionError("a full-pickle loader was called without --trust-pickle")

    monkeypatch.setattr(torch.jit, "load", never)
    monkeypatch.setattr(torch.export, "load", never)
    out = tmp_path / "out"
    if command == "convert":
        argv = ["convert", torch_files / name, "--to", "onnx", "-o", out, "--input-shape", "1", "3", "2", "2"]
    else:
        out.mkdir()
        argv = ["validate", torch_files / name, DATA / "color_float.tflite"]
    code, stdout, err = run_cli(capsys, *argv)
    text = stdout + err
    assert code == 2, text
    assert "Traceback" not in text and "a full-pickle loader was called" not in text, text
    assert what in text and "--trust-pickle" in text and "arbitrary code" in text, text
    assert _files(out) == [] if out.exists() else True


def test_check_refuses_torchscript_and_its_hint_works(torch_files, capsys, monkeypatch):
    """`check` refuses a TorchScript archive; the flags its message names are accepted."""
    import torch

    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **kw: pytest.fail("loaded without --trust-pickle"))
    code, out, err = run_cli(capsys, "check", torch_files / "net.torchscript.pt")
    assert code == 1 and "FAIL loads" in out and "--trust-pickle" in out, out + err
    monkeypatch.setattr(torch.jit, "load", real_load)
    code, out, err = run_cli(capsys, "check", torch_files / "net.torchscript.pt", "--trust-pickle",
                             "--input-shape", "1", "3", "2", "2")
    assert code == 0 and "PASSED" in out, out + err


def test_torchscript_loads_with_trust(torch_files, tmp_path, capsys):
    code, stdout, err = run_cli(capsys, "convert", torch_files / "net.torchscript.pt", "--to", "onnx",
                                "-o", tmp_path, "--input-shape", "1", "3", "2", "2", "--trust-pickle",
                                "--no-validate")
    assert code == 0, err
    assert len(list(tmp_path.glob("net*.onnx"))) == 1, _files(tmp_path)


# -- Keras Lambda layers -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def lambda_keras(tmp_path_factory):
    pytest.importorskip("tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    d = tmp_path_factory.mktemp("keras_sec")
    marker = d / "PWNED_lambda"
    inp = keras.Input((4, 4, 3), batch_size=1, name="image")
    # The Lambda's code touches the marker whenever it is traced or run.
    body = f"lambda t: (__import__('pathlib').Path({str(marker)!r}).touch(), t * 2.0)[1]"
    x = keras.layers.Lambda(eval(body))(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2)(x)
    model = keras.Model(inp, out)
    model.save(d / "lambda.keras")
    model.save(d / "lambda.h5")
    if marker.exists():
        marker.unlink()
    return d


@pytest.mark.parametrize("name", ["lambda.keras", "lambda.h5"])
def test_keras_lambda_refused_without_opt_in(lambda_keras, tmp_path, capsys, name):
    marker = lambda_keras / "PWNED_lambda"
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "convert", lambda_keras / name, "--to", "onnx", "-o", out)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Lambda" in lines[0] and "--keras-unsafe" in lines[0], err
    assert "Traceback" not in err
    assert not marker.exists(), "the Lambda layer's code ran"
    assert not out.exists() or _files(out) == []


def test_keras_lambda_runs_with_opt_in(lambda_keras, tmp_path, capsys):
    marker = lambda_keras / "PWNED_lambda"
    code, stdout, err = run_cli(capsys, "convert", lambda_keras / "lambda.keras", "--to", "tflite", "-o",
                                tmp_path, "--keras-unsafe", "--no-validate")
    assert code == 0, err
    assert marker.exists(), "--keras-unsafe should load (and trace) the Lambda layer"
    assert (tmp_path / "lambda_float.tflite").is_file()
    marker.unlink()


# -- the compiler container ------------------------------------------------------------------
def _flag_value(cmd, flag):
    return [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == flag]


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_container_is_locked_down(engine, tmp_path, capsys, monkeypatch):
    """Run the real `convert --to edgetpu --compiler ENGINE` flow with the engine's process
    calls captured (no Docker here): the command line must isolate the compiler."""
    import shutil

    from converters.edgetpu import backends as cb

    src = tmp_path / "in" / "net.tflite"
    src.parent.mkdir()
    shutil.copy(DATA / "color_uint8.tflite", src)
    captured = []

    def fake_run(cmd, timeout, on_timeout=None, env=None):
        captured.append(list(cmd))
        return 1, "", "stand-in engine: not run", False, 0.0

    monkeypatch.setattr(cb.ContainerBackend, "availability", lambda self: (True, self.engine))
    monkeypatch.setattr(cb.ContainerBackend, "ensure_image", lambda self, progress=None: "edgeport/test:tag")
    monkeypatch.setattr(cb, "_run", fake_run)
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "convert", src, "--to", "edgetpu", "--compiler", engine, "-o", out,
                                "--no-validate")
    assert code == 1 and "Traceback" not in err, err  # the fake engine "failed"
    runs = [c for c in captured if len(c) > 1 and c[1] == "run"]
    assert len(runs) == 1, captured
    cmd = runs[0]
    assert cmd[0] == engine
    assert "--rm" in cmd
    assert _flag_value(cmd, "--network") == ["none"]
    # the caller's uid:gid, or for root a non-root one (the compiler never runs as root)
    assert _flag_value(cmd, "--user") == [f"{os.getuid()}:{os.getgid()}" if os.getuid() else "1000:1000"]
    assert "--privileged" not in cmd and "--cap-add" not in cmd
    volumes = _flag_value(cmd, "--volume") + _flag_value(cmd, "-v")
    assert len(volumes) == 2, volumes
    model_mounts = [v for v in volumes if v.endswith(":ro")]
    out_mounts = [v for v in volumes if not v.endswith(":ro")]
    assert len(model_mounts) == 1 and len(out_mounts) == 1, volumes
    host_model = model_mounts[0].split(":")[0]
    assert os.path.basename(host_model).endswith(".tflite"), "only the model file is mounted, read-only"
    host_out = out_mounts[0].split(":")[0]
    # the writable mount is a private temp folder for the output, not the user's folder
    assert host_out not in (str(src.parent), str(tmp_path)), volumes
    assert not os.path.exists(host_out) or os.path.realpath(host_out) != os.path.realpath(src.parent)
    assert list(out.iterdir()) == [] if out.exists() else True
    if engine == "podman" and os.getuid() != 0:
        assert _flag_value(cmd, "--userns") == ["keep-id"]


def test_check_refuses_keras_lambda(lambda_keras, capsys):
    code, out, err = run_cli(capsys, "check", lambda_keras / "lambda.keras")
    assert code == 1 and "Lambda" in out and "--keras-unsafe" in out, out + err
    assert not (lambda_keras / "PWNED_lambda").exists()


# -- ONNX external data: a model may not read files outside its own folder ----------------------
@pytest.fixture(scope="module")
def onnx_reaching_out(tmp_path_factory):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    d = tmp_path_factory.mktemp("onnx_ext")
    (d / "secret.txt").write_text("host secret 0123456789abcdef\n")
    (d / "inner").mkdir()
    os.symlink(d / "secret.txt", d / "inner" / "link.bin")
    made = {}
    for name, location in (("traversal.onnx", "../secret.txt"), ("symlink.onnx", "link.bin")):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
        w = helper.make_tensor("w", TensorProto.FLOAT, [1, 4], [0, 0, 0, 0])
        w.ClearField("float_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "16")):
            e = w.external_data.add()
            e.key, e.value = k, v
        g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [w])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        path = d / "inner" / name
        path.write_bytes(m.SerializeToString())
        made[name] = path
    return made


@pytest.mark.parametrize("name", ["traversal.onnx", "symlink.onnx"])
@pytest.mark.parametrize("command", ["convert", "bench", "check"])
def test_onnx_external_data_outside_the_model_folder_is_refused(onnx_reaching_out, tmp_path, capsys, name,
                                                               command):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "out"
    argv = {"convert": ["convert", onnx_reaching_out[name], "--to", "ort", "-o", out],
            "bench": ["bench", onnx_reaching_out[name], "--runs", "1"],
            "check": ["check", onnx_reaching_out[name]]}[command]
    code, stdout, err = run_cli(capsys, *argv)
    assert code in (1, 2), stdout + err
    assert "outside" in stdout + err or "escapes" in stdout + err or "symbolic link" in stdout + err, stdout + err
    assert "host secret" not in stdout + err and "Traceback" not in stdout + err
    assert not out.exists() or [p.name for p in out.iterdir()] == []


# -- Core ML packages are read, never written, and never reach outside themselves --
def _package_files(root):
    import hashlib

    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            p = os.path.join(folder, f)
            out[os.path.relpath(p, root)] = (os.readlink(p) if os.path.islink(p)
                                             else hashlib.sha256(open(p, "rb").read()).hexdigest())
    return out


@pytest.fixture
def mlpackage(tmp_path):
    """A copy of the committed tiny Core ML package (relu over [1, 4]), Manifest.json compacted
    the way another tool might write it (coremltools rewrites it in its own format)."""
    import json
    import shutil

    pytest.importorskip("coremltools")
    pkg = tmp_path / "tiny.mlpackage"
    shutil.copytree(DATA / "tiny.mlpackage", pkg)
    manifest = json.loads((pkg / "Manifest.json").read_text())
    (pkg / "Manifest.json").write_text(json.dumps(manifest, separators=(",", ":")))
    return pkg, manifest


def test_reading_a_package_does_not_modify_it(mlpackage, capsys):
    pkg, _ = mlpackage
    before = _package_files(pkg)
    code, out, err = run_cli(capsys, "check", pkg)
    assert code == 0, out + err
    assert _package_files(pkg) == before  # Manifest.json byte for byte


def test_reading_a_package_leaves_no_copy_behind(mlpackage, tmp_path, monkeypatch, capsys):
    """`check` reads a private copy of the package: it is removed when the check ends (each
    `check` of a package once left a full copy in the temp folder)."""
    import tempfile

    pkg, _ = mlpackage
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    code, out, err = run_cli(capsys, "check", pkg)
    assert code == 0, out + err
    assert "spec readable" in out + err
    assert sorted(p.name for p in temp.iterdir()) == []


def test_manifest_path_outside_the_package_is_refused(mlpackage, tmp_path, capsys):
    import json

    pkg, manifest = mlpackage
    secret = tmp_path / "secret.mlmodel"
    secret.write_bytes((pkg / "Data" / "com.apple.CoreML" / "model.mlmodel").read_bytes())
    root = manifest["rootModelIdentifier"]
    manifest["itemInfoEntries"][root]["path"] = "../../../secret.mlmodel"
    (pkg / "Manifest.json").write_text(json.dumps(manifest))
    before = _package_files(pkg)
    code, out, err = run_cli(capsys, "check", pkg)
    assert code != 0
    assert "outside the package: refused" in out + err
    assert "outputs present" not in out  # the model outside was not read
    assert _package_files(pkg) == before


def test_symlink_out_of_the_package_is_refused(mlpackage, tmp_path, capsys):
    pkg, _ = mlpackage
    inner = pkg / "Data" / "com.apple.CoreML" / "model.mlmodel"
    outside = tmp_path / "outside.mlmodel"
    inner.rename(outside)
    inner.symlink_to(outside)
    code, out, err = run_cli(capsys, "check", pkg)
    assert code != 0
    assert "holds a symbolic link" in out + err
    assert inner.is_symlink() and outside.is_file()


def test_package_copy_is_removed(mlpackage):
    from converters.artefact import PackageCopy

    pkg, _ = mlpackage
    with PackageCopy(pkg) as copy:
        assert os.path.isfile(os.path.join(copy.path, "Manifest.json"))
        assert not copy.path.startswith(str(pkg))
    assert not os.path.exists(copy.path)


def test_an_unclosed_package_copy_is_removed_at_exit(mlpackage):
    """A caller that never closes its copy (a forgotten deactivate) leaves nothing behind:
    the copy goes when the interpreter exits."""
    import subprocess

    from tests.conftest import REPO

    pkg, _ = mlpackage
    code = ("import sys; from converters.artefact import PackageCopy; "
            "keep = PackageCopy(sys.argv[1]); print(keep._tmp)")
    done = subprocess.run([sys.executable, "-c", code, str(pkg)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    made = done.stdout.strip().splitlines()[-1]
    assert os.path.basename(made).startswith("edgeport-mlpackage-")
    assert not os.path.exists(made)
