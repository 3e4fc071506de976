"""`convert --to edgetpu` orchestration, run against a STAND-IN `edgetpu_compiler`.

The real Edge TPU compiler cannot run on the machines these tests were written on (x86-64
Debian package from Coral's apt repository, unreachable there; no container engine). So the
tests write a stand-in: a Python script named `edgetpu_compiler`, put first on PATH in a
tmp folder. It is NOT the compiler: it parses the real compiler's flags, prints stdout and
writes `<stem>_edgetpu.log` in the real compiler's formats (see converters/edgetpu/log.py
for where those formats come from), and writes a TFLite whose builtin ops are replaced by
one `edgetpu-custom-op` (custom ops stay outside, as the compiler does). It can be told to
fail, hang, or write nothing / an empty file / a non-TFLite stub.

`test_real_compiler_*` run only when a real `edgetpu_compiler` is on PATH.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[4] / "shared"
CORAL = SHARED / "fixtures" / "coral"
MOBILENET = "mobilenet_v1_0.25_128_quant.tflite"
POSENET = "posenet_mobilenet_v1_075_353_481_16_quant_decoder.tflite"

STANDIN = r'''#!{python}
# STAND-IN for Coral's edgetpu_compiler, written by edgeport's tests. Not the real compiler.
import argparse, os, sys, time, subprocess
from collections import Counter

mode = os.environ.get("EDGEPORT_STANDIN_MODE", "ok")
if os.environ.get("EDGEPORT_STANDIN_ARGV"):
    with open(os.environ["EDGEPORT_STANDIN_ARGV"], "a") as f:
        f.write(repr(sys.argv[1:]) + "\n")
p = argparse.ArgumentParser()
p.add_argument("-o", "--out_dir", default=".")
p.add_argument("-m", "--min_runtime_version", type=int)
p.add_argument("-n", "--num_segments", type=int, default=1)
p.add_argument("-s", "--show_operations", action="store_true")
p.add_argument("-d", "--search_delegate", action="store_true")
p.add_argument("-t", "--timeout_sec", type=int, default=180)
p.add_argument("-v", "--version", action="store_true")
p.add_argument("models", nargs="*")
a = p.parse_args()
print("Edge TPU Compiler version 16.0.384591198")
if a.version:
    sys.exit(0)
model = a.models[0]
stem = os.path.basename(model)[:-len(".tflite")]
if mode == "hang":
    child = subprocess.Popen(["sleep", "3600"])
    with open(os.environ["EDGEPORT_STANDIN_CHILD"], "w") as f:
        f.write(str(child.pid))
    time.sleep(3600)
if mode == "fail":
    print("Invalid model: " + os.path.basename(model))
    print("Model not quantized")
    sys.exit(1)
print("Started a compilation timeout timer of %d seconds." % a.timeout_sec)

# numpy is optional: the container test image (tests/converters/edgetpu/test_edgetpu_container.py) has none
from ai_edge_litert import schema_py_generated as s
import flatbuffers

m = s.ModelT.InitFromObj(s.Model.GetRootAsModel(bytearray(open(model, "rb").read()), 0))
g = m.subgraphs[0]
names = {{}}
for i, oc in enumerate(m.operatorCodes):
    code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
    names[i] = oc.customCode.decode() if code == s.BuiltinOperator.CUSTOM else \
        next(k for k, v in vars(s.BuiltinOperator).items() if v == code and not k.startswith("_"))
ops = [(names[op.opcodeIndex], op) for op in g.operators]
cpu = [op for n, op in ops if m.operatorCodes[op.opcodeIndex].customCode]
mapped = [n for n, op in ops if not m.operatorCodes[op.opcodeIndex].customCode]
tpu = s.OperatorCodeT(); tpu.builtinCode = tpu.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
tpu.customCode = "edgetpu-custom-op"; tpu.version = 1
m.operatorCodes = list(m.operatorCodes) + [tpu]
fused = s.OperatorT(); fused.opcodeIndex = len(m.operatorCodes) - 1
fused.inputs = list(g.inputs)
cpu_inputs = [t for op in cpu for t in op.inputs]
fused.outputs = [t for t in cpu_inputs if t not in g.inputs] + [t for t in g.outputs if t not in
                 [o for op in cpu for o in op.outputs]]
fused.customOptions = list(b"stand-in, not Edge TPU code")
g.operators = [fused] + cpu
b = flatbuffers.Builder(1024)
b.Finish(m.Pack(b), file_identifier=b"TFL3")
data = bytes(b.Output())

table = ["Edge TPU Compiler version 16.0.384591198", "Input: " + os.path.basename(model),
         "Output: " + stem + "_edgetpu.tflite", "", "Operator                       Count      Status", ""]
for n, c in Counter(mapped).items():
    table.append("%-30s %-10d %s" % (n, c, "Mapped to Edge TPU"))
# real logs name custom ops CUSTOM (e.g. "CUSTOM 1 Operation is working on an unsupported
# data type" in maxbbraun/thermal-face#2)
for n, c in Counter("CUSTOM" for op in cpu).items():
    table.append("%-30s %-10d %s" % (n, c, "Operation is working on an unsupported data type"))
outs = [stem + "_edgetpu.tflite"] if a.num_segments <= 1 else \
    ["%s_segment_%d_of_%d_edgetpu.tflite" % (stem, i, a.num_segments) for i in range(a.num_segments)]
if mode not in ("nothing",):
    for name in outs:
        with open(os.path.join(a.out_dir, name), "wb") as f:
            f.write(b"" if mode == "empty" else b"stub" if mode == "stub" else data)
with open(os.path.join(a.out_dir, stem + "_edgetpu.log"), "w") as f:
    f.write("\n".join(table) + "\n")
print()
print("Model compiled successfully in 12 ms.")
print()
print("Input model: " + model)
print("Input size: 513.28KiB")
print("Output model: " + os.path.join(a.out_dir, outs[0]))
print("Output size: 591.70KiB")
print("On-chip memory used for caching model parameters: 480.00KiB")
print("On-chip memory remaining for caching model parameters: 7.50MiB")
print("Off-chip memory used for streaming uncached model parameters: 0.00B")
print("Number of Edge TPU subgraphs: 1")
print("Total number of operations: %d" % len(ops))
print("Operation log: " + os.path.join(a.out_dir, stem + "_edgetpu.log"))
if a.show_operations:
    print()
    print("\n".join(table[4:]))
if cpu:
    print()
    print("Model successfully compiled but not all operations are supported by the Edge TPU. "
          "A percentage of the model will instead run on the CPU, which is slower.")
    print("Number of operations that will run on Edge TPU: %d" % len(mapped))
    print("Number of operations that will run on CPU: %d" % len(cpu))
print("Compilation child process completed within timeout period.")
print("Compilation succeeded!")
'''


@pytest.fixture(scope="session")
def coral():
    if not (CORAL / MOBILENET).is_file():
        pytest.skip(f"shared Coral fixtures not found at {CORAL} (they live beside the checkout)")
    return CORAL


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """A stand-in `edgetpu_compiler` first on PATH; returns a helper to set its mode."""
    folder = tmp_path / "standin-bin"
    folder.mkdir()
    exe = folder / "edgetpu_compiler"
    exe.write_text(STANDIN.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    argv_log = tmp_path / "standin-argv.txt"
    monkeypatch.setenv("EDGEPORT_STANDIN_ARGV", str(argv_log))
    monkeypatch.setenv("EDGEPORT_STANDIN_CHILD", str(tmp_path / "standin-child.pid"))

    class Standin:
        path = exe
        argv = argv_log
        child = tmp_path / "standin-child.pid"

        def mode(self, m):
            monkeypatch.setenv("EDGEPORT_STANDIN_MODE", m)

        def calls(self):
            import ast

            return [ast.literal_eval(line) for line in argv_log.read_text().splitlines()] if argv_log.exists() else []

    return Standin()


@pytest.fixture
def no_compiler(tmp_path, monkeypatch):
    """PATH with neither edgetpu_compiler nor docker nor podman (python stays reachable)."""
    folder = tmp_path / "empty-bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def _options(**kw):
    from converters.options import ConvertOptions

    kw.setdefault("quiet", True)
    kw.setdefault("compiler", "local")
    return ConvertOptions(**kw)


def _convert(src, outdir, **kw):
    from converters.pipeline import convert_model

    return convert_model(str(src), ["edgetpu"], _options(**kw), outdir=str(outdir), validate=False)


# -- orchestration through the pipeline ---------------------------------------------------

def test_convert_with_standin_writes_model_log_and_report(coral, standin, tmp_path):
    from converters.edgetpu.compile import format_report
    from edge.tflite_model import TFLiteModel

    out = tmp_path / "out"
    result = _convert(coral / MOBILENET, out, min_runtime_version=13, search_delegate=True, timeout=120)
    model = out / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    assert [h["path"] for h in result.hops] == [str(model)]
    compiled = TFLiteModel.load(model)
    assert compiled.is_edgetpu_compiled() and compiled.op_names() == ["edgetpu-custom-op"]
    report = json.loads((out / "mobilenet_v1_0.25_128_quant_edgetpu.report.json").read_text())
    assert report["compiler_version"] == "16.0.384591198"
    assert (report["mapped"], report["total"], report["edgetpu_subgraphs"]) == (31, 31, 1)
    assert {r["op"]: r["count"] for r in report["operators"]} == {
        "CONV_2D": 15, "DEPTHWISE_CONV_2D": 13, "AVERAGE_POOL_2D": 1, "RESHAPE": 1, "SOFTMAX": 1}
    assert report["prediction"]["mapped"] == 31
    log = (out / "mobilenet_v1_0.25_128_quant_edgetpu.log").read_text()
    assert "Operator" in log and "Mapped to Edge TPU" in log
    # the flags reached the compiler
    (argv,) = standin.calls()
    assert argv[argv.index("--min_runtime_version") + 1] == "13"
    assert "--search_delegate" in argv and argv[argv.index("--timeout_sec") + 1] == "120"
    # no temp leftovers, input untouched
    assert not [p for p in os.listdir(out) if p.startswith(".")]
    side = json.loads((out / "mobilenet_v1_0.25_128_quant_edgetpu.tflite.edgeport.json").read_text())
    assert side["conversion"]["edgetpu"]["mapped"] == 31
    assert format_report(side["conversion"]).splitlines()[0].startswith("31 of 31 ops mapped to the Edge TPU")


def test_convert_posenet_reports_the_cpu_custom_op(coral, standin, tmp_path):
    from converters.edgetpu.compile import compile_model, format_report

    report, files, log = compile_model(str(coral / POSENET), _options())
    assert (report["mapped"], report["total"]) == (37, 38)
    text = format_report(report)
    assert "37 of 38 ops mapped to the Edge TPU" in text
    assert "CUSTOM" in text and "Operation is working on an unsupported data type" in text
    assert report["ops_on_cpu"] == 1 and report["prediction"]["cpu_ops"] == ["PosenetDecoderOp"]


@pytest.mark.parametrize("mode, message", [
    ("fail", "Model not quantized"),
    ("nothing", "wrote no"),
    ("empty", "is empty"),
    ("stub", "not a valid TFLite model"),
])
def test_compiler_failures_never_leave_an_output(coral, standin, tmp_path, mode, message):
    from converters.edgetpu.backends import CompilerFailed

    standin.mode(mode)
    out = tmp_path / "out"
    with pytest.raises(CompilerFailed) as e:
        _convert(coral / MOBILENET, out)
    assert message in str(e.value)
    assert not out.exists() or not list(out.iterdir()), f"{mode}: left {os.listdir(out)}"


def test_hanging_compiler_is_killed_with_its_children(coral, standin, tmp_path):
    from converters.edgetpu.backends import CompilerFailed

    standin.mode("hang")
    out = tmp_path / "out"
    with pytest.raises(CompilerFailed, match="did not finish within 3 s and was killed"):
        _convert(coral / MOBILENET, out, timeout=3)
    pid = int(standin.child.read_text())
    # the stand-in's own child process went with its process group
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split()[2] == "Z":
                break
        import time

        time.sleep(0.1)
    else:
        pytest.fail(f"child {pid} of the timed-out compiler is still running")
    assert not out.exists() or not list(out.iterdir())  # a failed run removes the -o it made


def test_num_segments_keeps_whole_model_and_writes_segments(coral, standin, tmp_path):
    out = tmp_path / "out"
    _convert(coral / MOBILENET, out, num_segments=2)
    names = sorted(os.listdir(out))
    assert "mobilenet_v1_0.25_128_quant_edgetpu.tflite" in names
    assert "mobilenet_v1_0.25_128_quant_segment_0_of_2_edgetpu.tflite" in names
    assert "mobilenet_v1_0.25_128_quant_segment_1_of_2_edgetpu.tflite" in names
    calls = standin.calls()
    assert len(calls) == 2 and "--num_segments" not in calls[0] and "--num_segments" in calls[1]


def test_no_compiler_names_the_three_ways(coral, no_compiler, tmp_path):
    from converters.edgetpu.backends import CompilerUnavailable

    out = tmp_path / "out"
    with pytest.raises(CompilerUnavailable) as e:
        _convert(coral / MOBILENET, out, compiler="auto")
    text = str(e.value)
    assert "edgetpu_compiler is not on PATH" in text and "docker is not installed" in text
    assert "podman is not installed" in text
    assert "edgetpu-compiler" in text and "Docker" in text and "Podman" in text
    assert not out.exists() or not list(out.iterdir())  # a failed run removes the -o it made


def test_float_model_is_refused_before_any_compiler_run(float_tflite, standin, tmp_path):
    from converters.edgetpu.compile import compile_model
    from edge.errors import InputError

    with pytest.raises(InputError) as e:
        compile_model(str(float_tflite), _options())
    assert "model not quantized" in str(e.value)
    assert "edgeport convert SOURCE --to tflite-int8 --calibration" in str(e.value)
    assert standin.calls() == []


@pytest.fixture(scope="session")
def float_tflite(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    x = tf.keras.Input((8, 8, 3), batch_size=1)
    m = tf.keras.Model(x, tf.keras.layers.Conv2D(4, 3)(x))
    path = tmp_path_factory.mktemp("float") / "float.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    return path


# -- container backends: real command lines ----------------------------------------------

def test_container_command_lines(tmp_path, monkeypatch):
    from converters.edgetpu import backends as cb

    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    for engine in ("docker", "podman"):
        b = cb.ContainerBackend(engine)
        cmd = b.run_command("edgeport/edgetpu-compiler:abc", str(model), str(tmp_path / "out"),
                            ["--show_operations"], "edgeport-compile-1")
        assert cmd[:4] == [engine, "run", "--rm", "--network"] and cmd[4] == "none"
        user = cmd[cmd.index("--user") + 1]
        assert user == (f"{os.getuid()}:{os.getgid()}" if os.getuid() else "1000:1000") == b.user()
        vols = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--volume"]
        assert vols == [f"{model}:/models/in/m.tflite:ro", f"{tmp_path / 'out'}:/models/out:rw"]
        assert cmd[-3:] == ["--out_dir", "/models/out", "/models/in/m.tflite"]
        assert ("--userns" in cmd) == (engine == "podman" and os.getuid() != 0)
        build = b.build_command("edgeport/edgetpu-compiler:abc", "/ctx")
        assert build[:5] == [engine, "build", "--platform", "linux/amd64", "--tag"]
    assert cb.image_tag() == f"edgeport/edgetpu-compiler:{cb.dockerfile_hash()}"
    assert len(cb.dockerfile_hash()) == 12


def test_docker_client_without_engine_is_not_available(tmp_path, monkeypatch):
    """A `docker` that cannot reach an engine (as on the machine these tests were written on)."""
    from converters.edgetpu import backends as cb

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at "
                                 "unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1\n")
    (fake / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    ok, why = cb.ContainerBackend("docker").availability()
    assert not ok and "engine is not reachable" in why and "Cannot connect" in why
    with pytest.raises(cb.CompilerUnavailable):
        cb.select_backend("docker")


# -- the real compiler, wherever one exists ------------------------------------------------

def _real_compiler():
    exe = shutil.which("edgetpu_compiler")
    if not exe:
        return None
    if "STAND-IN" in Path(exe).read_bytes()[:400].decode("latin-1"):
        return None
    return exe


@pytest.mark.slow
def test_real_compiler_maps_mobilenet(coral, tmp_path):
    if not _real_compiler():
        pytest.skip("no real edgetpu_compiler on PATH (Coral's x86-64 Debian package); "
                    "the stand-in tests cover the orchestration")
    from edge.tflite_model import TFLiteModel

    out = tmp_path / "out"
    _convert(coral / MOBILENET, out, timeout=300)
    model = TFLiteModel.load(out / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")
    assert model.is_edgetpu_compiled()
    report = json.loads((out / "mobilenet_v1_0.25_128_quant_edgetpu.report.json").read_text())
    assert report["compiler_version"] and report["mapped"] == report["total"] == 31


def test_cli_convert_prints_report_with_standin(coral, standin, tmp_path):
    """Through `edgeport convert` when the convert command exists."""
    from edgeport.cli import COMMANDS

    if "convert" not in COMMANDS:
        pytest.skip("the convert command is not registered yet")
    p = subprocess.run([sys.executable, "-m", "edgeport", "convert", str(coral / MOBILENET), "--to", "edgetpu",
                        "-o", str(tmp_path / "x"), "--compiler", "local", "--no-validate"],
                       capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert p.returncode == 0, p.stderr
    assert "31 of 31 ops mapped to the Edge TPU" in p.stdout + p.stderr
    assert (tmp_path / "x" / "mobilenet_v1_0.25_128_quant_edgetpu.tflite").is_file()


# -- container settings: runtime, ulimits, image, user ----------------------------

def test_container_settings_from_environment_and_options(monkeypatch):
    from converters.edgetpu import backends as cb
    from edge.errors import InputError

    for var in ("EDGEPORT_CONTAINER_RUNTIME", "EDGEPORT_CONTAINER_ULIMITS", "EDGEPORT_COMPILER_IMAGE",
                "EDGEPORT_COMPILER_BASE_IMAGE", "EDGEPORT_CONTAINER_USER"):
        monkeypatch.delenv(var, raising=False)
    s = cb.container_settings(_options())
    assert (s["runtime"], s["ulimits"], s["image"], s["user"]) == (None, [], None, "1000:1000")
    monkeypatch.setenv("EDGEPORT_CONTAINER_RUNTIME", "runc")
    monkeypatch.setenv("EDGEPORT_CONTAINER_ULIMITS", "nofile=1024:1024, nproc=1024:1024")
    monkeypatch.setenv("EDGEPORT_COMPILER_IMAGE", "localhost/x:1")
    s = cb.container_settings(None)
    assert (s["runtime"], s["ulimits"], s["image"]) == ("runc", ["nofile=1024:1024", "nproc=1024:1024"],
                                                        "localhost/x:1")
    # options win over the environment
    s = cb.container_settings(_options(container_runtime="crun", container_ulimits=("nofile=64:64",)))
    assert (s["runtime"], s["ulimits"]) == ("crun", ["nofile=64:64"])
    for bad in ({"container_ulimits": ("nofile=lots",)}, {"container_runtime": "runc; rm -rf /"},
                {"compiler_image": "--privileged"}):
        with pytest.raises(InputError):
            cb.container_settings(_options(**bad))
    monkeypatch.setenv("EDGEPORT_CONTAINER_USER", "0:0")
    with pytest.raises(InputError, match="non-root"):
        cb.container_settings(None)


def test_container_command_lines_with_runtime_and_ulimits(tmp_path, monkeypatch):
    from converters.edgetpu import backends as cb

    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    p = cb.ContainerBackend("podman", runtime="runc", ulimits=("nofile=1024:1024", "nproc=1024:1024"),
                            base_image="localhost/base:1")
    cmd = p.run_command("img:1", str(model), str(tmp_path / "out"), [], "edgeport-compile-1")
    assert cmd[:4] == ["podman", "--runtime", "runc", "run"]        # podman: a global option
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--ulimit"] == ["nofile=1024:1024", "nproc=1024:1024"]
    assert "--cap-drop" in cmd and "no-new-privileges" in cmd
    build = p.build_command("img:1", "/ctx")
    assert build[:4] == ["podman", "--runtime", "runc", "build"] and build[build.index("--from") + 1] == "localhost/base:1"
    assert "--ulimit" in build
    d = cb.ContainerBackend("docker", runtime="runc")
    cmd = d.run_command("img:1", str(model), str(tmp_path / "out"), [], "edgeport-compile-1")
    assert cmd[:2] == ["docker", "run"] and cmd[cmd.index("--runtime") + 1] == "runc"   # docker: a run option
    with pytest.raises(cb.InputError, match="cannot replace"):
        cb.ContainerBackend("docker", base_image="localhost/base:1").build_command("img:1", "/ctx")
    # the caller's uid, or a non-root one for root
    monkeypatch.setattr(cb.os, "getuid", lambda: 0)
    assert p.user() == "1000:1000"
    assert "--userns" not in p.run_command("img:1", str(model), str(tmp_path), [], "n")   # keep-id: rootless only
    assert "runtime runc" in p.describe("img:1") and "user 1000:1000" in p.describe("img:1")


BUILD_LOG = """\
STEP 1/9: FROM localhost/edgeport-ci-base:bookworm
STEP 2/9: ARG EDGETPU_COMPILER_VERSION=16.0
STEP 4/9: RUN set -eux;     apt-get update;     apt-get install -y curl gnupg;     curl -fsSL -o /tmp/k.gpg https://packages.cloud.google.com/apt/doc/apt-key.gpg
+ apt-get update
Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]
+ curl -fsSL -o /tmp/k.gpg https://packages.cloud.google.com/apt/doc/apt-key.gpg
curl: (6) Could not resolve host: packages.cloud.google.com
Error: building at STEP "RUN set -eux; apt-get update; ...": while running runtime: exit status 6
"""


def test_build_failure_is_one_line():
    from converters.edgetpu.backends import build_failure_line

    line = build_failure_line(BUILD_LOG)
    assert "\n" not in line
    assert line.startswith("step 4/9 (RUN set -eux; apt-get update;")
    assert "failed at `curl -fsSL -o /tmp/k.gpg https://packages.cloud.google.com/apt/doc/apt-key.gpg`" in line
    assert line.endswith("curl: (6) Could not resolve host: packages.cloud.google.com (exit 6)")
    assert build_failure_line("") == "no output"
