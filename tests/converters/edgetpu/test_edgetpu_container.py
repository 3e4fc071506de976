"""`convert --to edgetpu --compiler podman` with a real container engine.

Coral's apt repository is unreachable here, so the real compiler cannot go into an image. These
tests build a TEST image holding the STAND-IN compiler of tests/converters/edgetpu/test_edgetpu_compile.py (a
Python script, not Coral's compiler), named `localhost/edgeport-test/edgetpu-compiler-standin`,
from a local base image that .ci/containers.sh makes with debootstrap (no registry is reachable).
Then everything else is real: podman starts the container without network, as a non-root user,
with the model mounted read-only; edgeport collects the output, parses the log, kills a hang and
removes its container. The shipped Dockerfile is built too (`podman build --from` the local base),
up to the step that needs Coral's repository, and that failure must come out as one line.

Every test skips, with the reason, where podman cannot run a container.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.converters.edgetpu.test_edgetpu_compile import STANDIN

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "tests" / "data"
MODEL = DATA / "color_uint8.tflite"       # full-integer: QUANTIZE, MEAN, FULLY_CONNECTED, SOFTMAX
BASE = os.environ.get("EDGEPORT_TEST_BASE_IMAGE", "localhost/edgeport-ci-base:bookworm")
STANDIN_IMAGE = "localhost/edgeport-test/edgetpu-compiler-standin"
ULIMITS = os.environ.get("EDGEPORT_CONTAINER_ULIMITS", "nofile=1024:1024,nproc=1024:1024")

# Inside the container: what the compiler's process can see and do, written to the output folder.
PROBE = r'''#!/usr/bin/python3
# PROBE, not a compiler: reports the container's isolation as JSON in the output folder.
import json, os, sys
args = sys.argv[1:]
out = args[args.index("--out_dir") + 1]
model = args[-1]
facts = {"uid": os.getuid(), "gid": os.getgid(), "argv": args,
         "interfaces": sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else None,
         "model_readable": os.access(model, os.R_OK), "model_bytes": os.path.getsize(model)}
try:
    with open(model, "ab") as f:
        f.write(b"x")
    facts["model_write"] = "written"
except OSError as e:
    facts["model_write"] = e.strerror
for path in ("/models/in/new-file", "/etc/edgeport-probe"):
    try:
        open(path, "w").close()
        facts["wrote " + path] = True
    except OSError as e:
        facts["wrote " + path] = e.strerror
facts["mounts"] = {}
for line in open("/proc/self/mounts"):
    fields = line.split()
    if fields[1].startswith("/models/"):
        facts["mounts"][fields[1]] = fields[3].split(",")
with open(os.path.join(out, "probe.json"), "w") as f:
    json.dump(facts, f)
print("probe done")
'''


def _podman(*args, timeout=600):
    """podman with the OCI runtime flag for commands that start containers (run, build)."""
    flags = _runtime_flags() if args[0] in ("run", "build") else []
    return subprocess.run(["podman", *flags, *args], capture_output=True, text=True, timeout=timeout)


def _runtime():
    return os.environ.get("EDGEPORT_CONTAINER_RUNTIME") or ("runc" if shutil.which("runc") else None)


def _runtime_flags():
    return ["--runtime", _runtime()] if _runtime() else []


def _ulimit_flags():
    return [f for u in ULIMITS.split(",") if u for f in ("--ulimit", u)]


@pytest.fixture(scope="session")
def engine():
    """podman, able to run a container from the local base image; else skip with the reason."""
    if not shutil.which("podman"):
        pytest.skip("podman is not installed (.ci/containers.sh installs it with apt-get as root)")
    p = _podman("image", "exists", BASE, timeout=60)
    if p.returncode != 0:
        pytest.skip(f"no local base image {BASE} (.ci/containers.sh builds it with debootstrap)")
    p = _podman("run", "--rm", "--network", "none", *_ulimit_flags(), BASE, "true", timeout=120)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"podman cannot run a container here (runtime {_runtime() or 'default'}): {last}")
    return "podman"


def _build(tag_base, files, dockerfile, tmp):
    """Build an image from `files` ({name: text}) and `dockerfile`; tag = base:hash of both."""
    ctx = tmp / tag_base.rsplit("/", 1)[-1]
    ctx.mkdir()
    digest = hashlib.sha256(dockerfile.encode())
    for name, src in files.items():
        dst = ctx / name
        if isinstance(src, Path):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir() \
                else shutil.copyfile(src, dst)
            digest.update(name.encode())
        else:
            dst.write_text(src)
            digest.update(src.encode())
        if dst.is_file():
            dst.chmod(0o755)
    (ctx / "Dockerfile").write_text(dockerfile)
    tag = f"{tag_base}:{digest.hexdigest()[:12]}"
    if _podman("image", "exists", tag, timeout=60).returncode != 0:
        p = _podman("build", *_ulimit_flags(), "--tag", tag, str(ctx))
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return tag


@pytest.fixture(scope="session")
def images(engine, tmp_path_factory):
    """{"standin", "hang", "probe"}: test images built FROM the local base (no network)."""
    import ai_edge_litert
    import flatbuffers

    tmp = tmp_path_factory.mktemp("images")
    litert = Path(ai_edge_litert.__file__).parent
    standin = _build(STANDIN_IMAGE, {
        "edgetpu_compiler": STANDIN.format(python="/usr/bin/python3"),
        "flatbuffers": Path(flatbuffers.__file__).parent,
        "schema_py_generated.py": litert / "schema_py_generated.py",
    }, f"""FROM {BASE}
LABEL org.edgeport.note="STAND-IN edgetpu_compiler written by edgeport's tests; NOT Coral's compiler"
COPY flatbuffers /opt/standin/flatbuffers
COPY schema_py_generated.py /opt/standin/ai_edge_litert/schema_py_generated.py
RUN touch /opt/standin/ai_edge_litert/__init__.py
COPY edgetpu_compiler /usr/local/bin/edgetpu_compiler
ENV PYTHONPATH=/opt/standin
ENTRYPOINT ["edgetpu_compiler"]
""", tmp)
    hang = _build(STANDIN_IMAGE + "-hang", {}, f"""FROM {standin}
ENV EDGEPORT_STANDIN_MODE=hang EDGEPORT_STANDIN_CHILD=/tmp/child.pid
""", tmp)
    probe = _build("localhost/edgeport-test/isolation-probe", {"probe": PROBE}, f"""FROM {BASE}
COPY probe /usr/local/bin/edgetpu_compiler
ENTRYPOINT ["edgetpu_compiler"]
""", tmp)
    return {"standin": standin, "hang": hang, "probe": probe}


def _cli(*args, timeout=600, env=None):
    e = dict(os.environ, PYTHONPATH=str(REPO))
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "edgeport", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=str(REPO))


def _engine_flags():
    flags = ["--compiler", "podman"]
    if _runtime():
        flags += ["--container-runtime", _runtime()]
    for u in ULIMITS.split(","):
        flags += ["--container-ulimit", u]
    return flags


def _our_containers():
    p = _podman("ps", "--all", "--format", "{{.Names}}", timeout=60)
    assert p.returncode == 0, p.stderr
    return [n for n in p.stdout.split() if n.startswith("edgeport-compile-")]


def test_convert_end_to_end_in_podman(images, tmp_path):
    src = tmp_path / "in" / "m.tflite"
    src.parent.mkdir()
    shutil.copyfile(MODEL, src)
    before = src.read_bytes()
    out = tmp_path / "out"
    p = _cli("convert", src, "--to", "edgetpu", *_engine_flags(), "--compiler-image", images["standin"],
             "-o", out, "--no-validate")
    assert p.returncode == 0, p.stdout + p.stderr
    text = p.stdout + p.stderr
    # which engine, runtime and image ran the compiler
    assert f"via podman (runtime {_runtime() or 'default'}, image {images['standin']}" in text, text
    assert "5 of 5 ops mapped to the Edge TPU" in text, text        # the log, parsed
    assert src.read_bytes() == before
    from edge.tflite_model import TFLiteModel

    compiled = out / "m_edgetpu.tflite"
    assert TFLiteModel.load(compiled).is_edgetpu_compiled()          # the output, collected
    report = json.loads((out / "m_edgetpu.report.json").read_text())
    assert report["backend"] == "podman" and report["returncode"] == 0
    c = report["container"]
    assert (c["engine"], c["image"]) == ("podman", images["standin"])
    assert c["runtime"] == (_runtime() or "default") and c["ulimits"] == ULIMITS.split(",")
    assert c["user"].split(":")[0] != "0"
    assert (out / "m_edgetpu.log").read_text().startswith("Edge TPU Compiler version")
    assert not _our_containers()


def test_container_is_isolated(images, tmp_path):
    """No network, not root, the model read-only, only the output folder writable."""
    from converters.edgetpu import backends as cb

    model = tmp_path / "in" / "m.tflite"
    model.parent.mkdir()
    shutil.copyfile(MODEL, model)
    out = tmp_path / "out"
    out.mkdir()
    b = cb.ContainerBackend("podman", runtime=_runtime(), ulimits=tuple(ULIMITS.split(",")), image=images["probe"])
    r = b.compile(str(model), str(out), ["--show_operations"], timeout=300)
    assert r.returncode == 0 and not r.timed_out, r.stdout + r.stderr
    facts = json.loads((out / "probe.json").read_text())
    assert facts["uid"] != 0 and facts["gid"] != 0, facts
    assert facts["interfaces"] == ["lo"], facts                      # --network none
    assert facts["model_readable"] and facts["model_bytes"] == MODEL.stat().st_size
    assert "ro" in facts["mounts"]["/models/in/m.tflite"], facts      # mounted read-only
    assert "rw" in facts["mounts"]["/models/out"], facts
    assert set(facts["mounts"]) == {"/models/in/m.tflite", "/models/out"}, facts
    assert facts["model_write"] in ("Read-only file system", "Permission denied"), facts
    assert facts["wrote /models/in/new-file"] is not True, facts
    assert facts["wrote /etc/edgeport-probe"] is not True, facts    # not root: the image is not writable
    assert model.read_bytes() == MODEL.read_bytes()
    assert facts["argv"][-3:] == ["--out_dir", "/models/out", "/models/in/m.tflite"]
    assert not _our_containers()


def test_hang_is_killed_and_its_container_removed(images, tmp_path):
    src = tmp_path / "m.tflite"
    shutil.copyfile(MODEL, src)
    p = _cli("convert", src, "--to", "edgetpu", *_engine_flags(), "--compiler-image", images["hang"],
             "--timeout", "8", "-o", tmp_path / "out", "--no-validate")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "did not finish within 8 s and was killed" in p.stderr, p.stderr
    assert not _our_containers()                                      # podman ps -a: none of ours left
    assert not (tmp_path / "out" / "m_edgetpu.tflite").exists()


def test_shipped_dockerfile_builds_until_coral_repository(engine, tmp_path):
    """`podman build --from` the local base: Debian's steps run, Coral's repository is out of reach,
    and edgeport says so in one line."""
    from converters.edgetpu import backends as cb

    src = tmp_path / "m.tflite"
    shutil.copyfile(MODEL, src)
    p = _cli("convert", src, "--to", "edgetpu", *_engine_flags(), "-o", tmp_path / "out", "--no-validate",
             env={"EDGEPORT_COMPILER_BASE_IMAGE": BASE}, timeout=1200)
    if p.returncode == 0:     # Coral's repository was reachable: the real compiler ran
        assert "ops mapped to the Edge TPU" in p.stdout + p.stderr, p.stdout + p.stderr
        return
    assert p.returncode == 1, p.stdout + p.stderr
    errors = [ln for ln in p.stderr.splitlines() if "could not build the compiler image" in ln]
    assert len(errors) == 1, p.stderr
    line = errors[0]
    print(line)
    if "failed at `curl" not in line and "failed at `apt-get" in line:
        pytest.skip(f"Debian's mirror was not reachable from the build, so Coral's step was not reached: {line}")
    assert cb.image_tag() in line and re.search(r"step \d+/\d+ \(RUN set -eux; apt-get update;", line), line
    # the failure is at Coral's repository (Debian's packages came through), not earlier
    assert "failed at `curl -fsSL -o /tmp/coral-apt-key.gpg https://packages.cloud.google.com/" in line, line
    assert "packages.cloud.google.com" in line.split("`: ", 1)[1], line
    assert "Traceback" not in p.stderr
    assert _podman("image", "exists", cb.image_tag(), timeout=60).returncode != 0
    assert not _our_containers()
