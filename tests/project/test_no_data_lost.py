"""No data lost: concurrent writers and killed conversions never leave a mixed,
partial or finished-looking output.

Real `edgeport convert` processes (`python -m edgeport`), tiny models made here:
  * two conversions writing the same output at once leave one complete, valid file, made
    wholly by one of them (its content, its embedded provenance and its sidecar agree);
  * a conversion SIGKILLed while its Edge TPU compiler (a slow stand-in) runs, or at several
    moments of a real ONNX -> ORT conversion, leaves nothing under the final name that is
    not a complete, loadable model.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA

pytestmark = pytest.mark.slow

EDGEPORT = [sys.executable, "-m", "edgeport"]


def _onnx_adding(path, value):
    """A tiny ONNX model y = x + value (value tells the models apart)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 8], [float(value)] * 8)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "add", [x], [y], [w])
    model = helper.make_model(graph, producer_name="edgeport-tests", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _sha(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _run_ort(path):
    """The value the ORT/ONNX model adds (raises if the file is not a complete model)."""
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": np.zeros((1, 8), np.float32)})
    assert np.all(y == y.flat[0])
    return float(y.flat[0])


def _visible(folder):
    """Files under `folder` that a user would see as outputs (hidden temp entries left out)."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [os.path.relpath(os.path.join(root, f), folder) for f in files if not f.startswith(".")]
    return sorted(out)


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrent_src")
    (root / "a").mkdir()
    (root / "b").mkdir()
    _onnx_adding(root / "a" / "net.onnx", 1.0)
    _onnx_adding(root / "b" / "net.onnx", 2.0)
    return root


def test_two_writers_of_one_output(two_sources, tmp_path):
    out = tmp_path / "out"
    srcs = {1.0: two_sources / "a" / "net.onnx", 2.0: two_sources / "b" / "net.onnx"}
    before = {v: _sha(p) for v, p in srcs.items()}
    for round_, validate in enumerate([[], ["--no-validate"], []]):
        procs = [subprocess.Popen(EDGEPORT + ["convert", str(p), "--to", "ort", "-o", str(out), "--force",
                                              "--quiet"] + validate,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for p in srcs.values()]
        results = [p.communicate(timeout=300) for p in procs]
        for p, (_o, e) in zip(procs, results):
            assert p.returncode == 0, e
            assert "Traceback" not in e
        model = out / "net.ort"
        added = _run_ort(model)                      # complete and loadable
        assert added in srcs, f"round {round_}: the output adds {added}, made by neither run"
        # The model is wholly one run's: its embedded provenance and its sidecar name that source.
        from converters import metadata

        embedded = metadata.read(model, "ort")
        assert embedded and embedded["source"]["sha256"] == before[added], (round_, embedded)
        sidecar = json.loads((out / "net.ort.edgeport.json").read_text())
        assert sidecar["source"]["sha256"] == before[added], \
            f"round {round_}: model from one run, sidecar from the other"
        assert not [n for n in os.listdir(out) if ".tmp-" in n], os.listdir(out)
    assert {v: _sha(p) for v, p in srcs.items()} == before


SLOW_VALIDATION = """
import sys, time
import converters.validation.validate as v
real = v.validate_pair
def slow(*a, **kw):
    print("validation started", file=sys.stderr, flush=True)
    time.sleep(float(sys.argv[1]))  # a big model's validation: the window another writer hits
    return real(*a, **kw)
v.validate_pair = slow
from edgeport.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_writer_during_anothers_validation(two_sources, tmp_path):
    """Run A renames its model, then validates for a while; run B writes the same output
    meanwhile. The model and the sidecar left must come from the same run."""
    out = tmp_path / "out"
    a, b = two_sources / "a" / "net.onnx", two_sources / "b" / "net.onnx"
    proc_a = subprocess.Popen([sys.executable, "-c", SLOW_VALIDATION, "12", "convert", str(a), "--to", "ort",
                               "-o", str(out), "--force"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    for line in proc_a.stderr:
        if "validation started" in line:
            break
    proc_b = subprocess.run(EDGEPORT + ["convert", str(b), "--to", "ort", "-o", str(out), "--force",
                                        "--no-validate"], capture_output=True, text=True, timeout=300)
    rest_a = proc_a.communicate(timeout=300)
    assert proc_a.returncode == 0, rest_a
    assert proc_b.returncode == 0, proc_b.stderr
    added = _run_ort(out / "net.ort")
    sidecar = json.loads((out / "net.ort.edgeport.json").read_text())
    want = _sha(a if added == 1.0 else b)
    assert sidecar["source"]["sha256"] == want, f"the model adds {added} but the sidecar is the other run's"
    assert not [n for n in os.listdir(out) if n.startswith(".")], os.listdir(out)


SLOW_COMPILER = """#!{python}
# STAND-IN for edgetpu_compiler (edgeport tests): writes half an output, then takes forever.
import os, sys, time
args = sys.argv[1:]
out_dir = args[args.index("--out_dir") + 1]
stem = os.path.basename(args[-1])[:-len(".tflite")]
with open(os.path.join(out_dir, stem + "_edgetpu.tflite"), "wb") as f:
    f.write(open(args[-1], "rb").read()[:200])
    f.flush()
with open({marker!r}, "w") as f:
    f.write(str(os.getpid()))
time.sleep(120)
"""


def _wait_for(path, proc, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if Path(path).exists() and Path(path).read_text().strip():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def test_killed_while_compiling_leaves_no_output(tmp_path):
    src = tmp_path / "net.tflite"
    src.write_bytes((DATA / "color_uint8.tflite").read_bytes())
    sha = _sha(src)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    marker = tmp_path / "compiler.pid"
    script = bindir / "edgetpu_compiler"
    script.write_text(SLOW_COMPILER.format(python=sys.executable, marker=str(marker)))
    script.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.Popen(EDGEPORT + ["convert", str(src), "--to", "edgetpu", "--compiler", "local", "-o",
                                        str(out), "--no-validate"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    compiler_pid = None
    try:
        assert _wait_for(marker, proc), proc.communicate()
        compiler_pid = int(marker.read_text())
        # The compiler has written half a model somewhere; kill edgeport now.
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if compiler_pid:
            try:
                os.kill(compiler_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "net_edgetpu.tflite").exists()
    assert not (out / "net_edgetpu.tflite.edgeport.json").exists()
    assert _visible(out) == [], f"finished-looking outputs after a kill: {_visible(out)}"
    assert _visible(tmp_path / "bin") == ["edgetpu_compiler"]
    assert sorted(n for n in os.listdir(tmp_path) if not n.startswith(".")) == \
        ["bin", "compiler.pid", "net.tflite", "out"]
    assert _sha(src) == sha


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0, 2.5])
def test_killed_conversion_leaves_nothing_that_looks_finished(two_sources, tmp_path, delay):
    """SIGKILL a real ONNX -> ORT conversion `delay` s after it says it started converting."""
    src = two_sources / "a" / "net.onnx"
    sha = _sha(src)
    out = tmp_path / "out"
    proc = subprocess.Popen(EDGEPORT + ["convert", str(src), "--to", "ort", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "converting" in line:
                break
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    visible = _visible(out) if out.exists() else []
    allowed = {"net.ort", "net.ort.edgeport.json", "net.required_operators.config"}
    assert set(visible) <= allowed, visible
    if "net.ort" in visible:  # it finished before the kill: then it is whole
        assert _run_ort(out / "net.ort") == 1.0
    if "net.ort.edgeport.json" in visible:
        assert "net.ort" in visible
        json.loads((out / "net.ort.edgeport.json").read_text())
    assert _sha(src) == sha
    # A new run after the kill is not fooled by what the killed one left.
    done = subprocess.run(EDGEPORT + ["convert", str(src), "--to", "ort", "-o", str(out), "--no-validate"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _run_ort(out / "net.ort") == 1.0


# -- stale or unrelated artefacts never trusted; SIGTERM, full disks, stale temps ---
def _convert(capsys, *argv):
    from tests.conftest import run_cli

    return run_cli(capsys, "convert", *argv)


def test_unrelated_file_is_not_reused_as_an_intermediate(tmp_path, capsys):
    """An m.ort that edgeport did not make (no sidecar) is neither kept nor replaced."""
    _onnx_adding(tmp_path / "m.onnx", 1.0)
    _onnx_adding(tmp_path / "other.onnx", 5.0)
    (tmp_path / "m.ort").write_bytes((tmp_path / "other.onnx").read_bytes())
    before = _sha(tmp_path / "m.ort")
    code, out, err = _convert(capsys, tmp_path / "m.onnx", "--to", "ort", "--no-validate")
    assert code == 2, err
    assert "m.ort exists but edgeport did not make it" in err and "kept" not in err
    assert _sha(tmp_path / "m.ort") == before


def test_artefact_of_another_source_is_rebuilt(tmp_path, capsys):
    """Same file name, a different source: the old artefact is converted again, not kept."""
    src, out = tmp_path / "net.onnx", tmp_path / "out"
    _onnx_adding(src, 1.0)
    code, _, err = _convert(capsys, src, "--to", "ort", "-o", out, "--no-validate")
    assert code == 0, err
    assert _run_ort(out / "net.ort") == 1.0
    _onnx_adding(src, 3.0)  # the user changed the model
    code, _, err = _convert(capsys, src, "--to", "ort", "-o", out, "--no-validate")
    assert code == 0, err
    assert "made from another source: converting again" in err
    assert _run_ort(out / "net.ort") == 3.0
    code, _, err = _convert(capsys, src, "--to", "ort", "-o", out, "--no-validate", "--opset", "14")
    assert code == 0 and "made with other options: converting again" in err, err
    code, _, err = _convert(capsys, src, "--to", "ort", "-o", out, "--no-validate", "--opset", "14")
    assert code == 0 and "exists: kept" in err, err


def test_changed_calibration_set_is_not_kept(tmp_path, capsys):
    """The options record carries a digest of the calibration images and the --data file, so
    the same folder or file name with other contents converts again instead of being kept."""
    import shutil

    import numpy as np

    src, out, cal = tmp_path / "net.onnx", tmp_path / "out", tmp_path / "cal"
    _onnx_adding(src, 1.0)
    cal.mkdir()
    photos = sorted((Path(__file__).resolve().parents[2] / "images").glob("*.jpg"))[:2]
    shutil.copy(photos[0], cal / "a.jpg")
    data = tmp_path / "cal.npz"
    np.savez(data, x=np.zeros((2, 4), np.float32))
    flags = ("--to", "ort", "-o", out, "--no-validate", "--calibration", cal, "--data", data)
    assert _convert(capsys, src, *flags)[0] == 0
    code, _, err = _convert(capsys, src, *flags)
    assert code == 0 and "exists: kept" in err, err
    shutil.copy(photos[1], cal / "a.jpg")          # same name, another photo
    code, _, err = _convert(capsys, src, *flags)
    assert code == 0 and "made with other options: converting again" in err, err
    np.savez(data, x=np.ones((2, 4), np.float32))  # same file name, other arrays
    code, _, err = _convert(capsys, src, *flags)
    assert code == 0 and "made with other options: converting again" in err, err
    code, _, err = _convert(capsys, src, *flags)
    assert code == 0 and "exists: kept" in err, err


def test_other_input_shapes_or_args_are_not_kept(tmp_path, capsys):
    """--input-shapes and --arg shape an export, so an artefact made with others is redone."""
    src, out = tmp_path / "net.onnx", tmp_path / "out"
    _onnx_adding(src, 1.0)
    base = ("--to", "ort", "-o", out, "--no-validate")
    assert _convert(capsys, src, *base, "--arg", "sr=16000")[0] == 0
    code, _, err = _convert(capsys, src, *base, "--arg", "sr=16000")
    assert code == 0 and "exists: kept" in err, err
    code, _, err = _convert(capsys, src, *base, "--arg", "sr=8000")
    assert code == 0 and "made with other options: converting again" in err, err
    code, _, err = _convert(capsys, src, *base, "--arg", "sr=8000", "--input-shapes", "[1,8]")
    assert code == 0 and "made with other options: converting again" in err, err


def test_changed_artefact_is_not_trusted(tmp_path, capsys):
    """The sidecar records the artefact's own sha256: a file replaced under it is not kept."""
    src, out = tmp_path / "net.onnx", tmp_path / "out"
    _onnx_adding(src, 1.0)
    assert _convert(capsys, src, "--to", "ort", "-o", out, "--no-validate")[0] == 0
    _onnx_adding(tmp_path / "x.onnx", 9.0)
    (out / "net.ort").write_bytes((tmp_path / "x.onnx").read_bytes())
    code, _, err = _convert(capsys, src, "--to", "ort", "-o", out, "--no-validate")
    assert code == 2 and "not the file its sidecar describes" in err, err


def test_crash_during_validation_leaves_nothing_under_the_final_name(tmp_path, capsys, monkeypatch):
    """Validation runs on the hidden temp: a crash (or kill, or full disk) there leaves no
    model and no sidecar, so no rerun can say 'exists: kept' about an unvalidated file."""
    import converters.pipeline.hop as pipeline  # _validate lives in the hop module

    src, out = tmp_path / "net.onnx", tmp_path / "out"
    _onnx_adding(src, 1.0)

    def crash(*a, **k):
        raise RuntimeError("validator crashed")

    monkeypatch.setattr(pipeline, "_validate", crash)
    code, _, err = _convert(capsys, src, "--to", "ort", "-o", out)
    assert code == 1 and "validator crashed" in err
    assert _visible(out) == [] if out.exists() else True
    monkeypatch.undo()
    code, stdout, err = _convert(capsys, src, "--to", "ort", "-o", out, "--json")
    assert code == 0, err
    hop = json.loads(stdout)["models"][0]["artefacts"][0]
    assert hop["status"] == "converted" and hop["validation"]["passed"] is True


def test_never_validated_artefact_is_validated_on_rerun(tmp_path, capsys):
    src, out = tmp_path / "net.onnx", tmp_path / "out"
    _onnx_adding(src, 1.0)
    assert _convert(capsys, src, "--to", "ort", "-o", out, "--no-validate")[0] == 0
    assert "validation" not in json.loads((out / "net.ort.edgeport.json").read_text())
    code, stdout, err = _convert(capsys, src, "--to", "ort", "-o", out, "--json")
    assert code == 0, err
    hop = json.loads(stdout)["models"][0]["artefacts"][0]
    assert hop["status"] == "kept" and hop["validation"]["passed"] is True
    assert json.loads((out / "net.ort.edgeport.json").read_text())["validation"]["passed"] is True


def test_source_is_not_overwritten_through_a_symlinked_folder(tmp_path, capsys):
    """An ONNX model named net.ort, converted --to ort into its own folder spelled another way."""
    real = tmp_path / "real"
    real.mkdir()
    _onnx_adding(real / "net.ort", 1.0)
    (tmp_path / "link").symlink_to("real")
    before = _sha(real / "net.ort")
    code, _, err = _convert(capsys, tmp_path / "link" / "net.ort", "--to", "ort", "-o", real, "--force",
                            "--no-validate")
    # refused by the run's one output guard (edge/run.py) before any work, naming the source
    assert code == 2 and "is the source model" in err and "never writes over an input" in err, err
    assert _sha(real / "net.ort") == before
    os.link(real / "net.ort", tmp_path / "hard.ort")  # a hard link is the same file too
    code, _, err = _convert(capsys, tmp_path / "hard.ort", "--to", "ort", "-o", real, "--force",
                            "--no-validate")
    assert code == 0 or "overwrite" in err
    assert _sha(real / "net.ort") == before


def test_full_disk_says_no_space_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """ENOSPC while the output is written: 'no space left writing X', exit 1, nothing partial."""
    import errno

    import converters.atomic as atomic

    src, out = tmp_path / "net.onnx", tmp_path / "out"
    _onnx_adding(src, 1.0)
    out.mkdir()
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    code, _, err = _convert(capsys, src, "--to", "ort", "-o", out, "--no-validate")
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert code == 1, err
    assert "no space left writing" in err and "net.ort" in err and "internal error" not in err
    assert os.listdir(out) == []


def test_full_tmpfs(tmp_path, capsys):
    """The same on a real 64 KB tmpfs (root only): the disk fills while ORT writes."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        src = tmp_path / "net.onnx"
        _onnx_adding(src, 1.0)
        with open(mnt / "filler", "wb") as f:  # leave less room than the model needs
            try:
                f.write(b"\0" * (64 << 10))
            except OSError:
                pass
        os.truncate(mnt / "filler", os.path.getsize(mnt / "filler") - 512)
        code, _, err = _convert(capsys, src, "--to", "ort", "-o", mnt, "--no-validate")
        assert code == 1, err
        assert "no space left writing" in err, err
        assert sorted(os.listdir(mnt)) == ["filler"]
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def _onnx_deep(path, layers=150, width=256):
    """A model slow enough to convert that a signal lands mid-conversion: `layers` MatMuls of
    width x width weights (about 40 MB)."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.normal(size=(width, width)) / width).astype(np.float32), f"w{i}")
             for i in range(layers)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"],
                              ["y" if i == layers - 1 else f"h{i}"]) for i in range(layers)]
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, producer_name="edgeport-tests", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.slow   # 15-20 s end to end (a 40 MB model converted): run by CI
def test_sigterm_cleans_up_like_sigint(tmp_path):
    """SIGTERM while a conversion's temp exists: the temp and the lock go, exit 143. The signal
    is sent once the temp is there (not after a fixed delay, which a fast machine outran: the
    tiny model was converted and validated, and the process was exiting, when it arrived)."""
    src = tmp_path / "net.onnx"
    _onnx_deep(src)
    out = tmp_path / "out"
    proc = subprocess.Popen(EDGEPORT + ["convert", str(src), "--to", "ort", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "converting" in line:
                break
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and \
                not any(p.name.startswith(".net.ort.tmp-") for p in out.iterdir()):
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode == 0:
        pytest.skip("the conversion finished before SIGTERM arrived")
    assert proc.returncode == 143, rest
    assert "interrupted" in rest
    # No .net.ort.lock, no .net.ort.tmp-*, and not even the -o folder this run created.
    assert not out.exists() or os.listdir(out) == [], os.listdir(out)


def test_stale_temps_and_locks_are_swept(two_sources, tmp_path, capsys):
    """Temps of a dead writer (its PID in the name) and an unheld lock go on the next run,
    even one that only keeps the existing output; a live writer's temp is left alone."""
    src, out = two_sources / "a" / "net.onnx", tmp_path / "out"
    assert _convert(capsys, src, "--to", "ort", "-o", out, "--no-validate")[0] == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / f".net.ort.tmp-{dead.pid}-abc").mkdir()
    (out / f".net.ort.tmp-{dead.pid}-abc" / "net.ort").write_bytes(b"half")
    (out / ".net.ort.lock").write_text(f"{dead.pid}\n")
    live = out / f".net.ort.tmp-{os.getpid()}-xyz"
    live.mkdir()
    code, _, err = _convert(capsys, src, "--to", "ort", "-o", out, "--no-validate")
    assert code == 0 and "exists: kept" in err, err
    left = sorted(n for n in os.listdir(out) if n.startswith("."))
    assert left == [live.name], left


def test_killed_compile_work_folder_is_swept(tmp_path):
    """A compile killed with SIGKILL cannot remove its /tmp work folder; the next one does."""
    from converters.edgetpu.compile import WORK_PREFIX, sweep_stale_work_dirs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{WORK_PREFIX}{dead.pid}-abc"
    (stale / "out").mkdir(parents=True)
    mine = tmp_path / f"{WORK_PREFIX}{os.getpid()}-def"
    mine.mkdir()
    sweep_stale_work_dirs(str(tmp_path))
    assert not stale.exists() and mine.exists()
