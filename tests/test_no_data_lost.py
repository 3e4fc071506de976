"""No data lost (issue #7): concurrent writers and killed conversions never leave a mixed,
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

from conftest import DATA

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
        for p, (o, e) in zip(procs, results):
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
