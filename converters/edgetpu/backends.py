"""Ways to run edgetpu_compiler: on PATH (local), or in a container (docker, podman).

Every backend runs `edgetpu_compiler [flags] -o OUT_DIR MODEL` under a timeout and kills
it (its whole process group, or the container by name) when the timeout passes. The
container image is built from the Dockerfile shipped in this package
(`converters/edgetpu/Dockerfile`) and tagged with a hash of that file, so editing the
Dockerfile makes a new image and an old one is never reused by mistake. Containers run
with `--rm --network none`, as the calling user's uid:gid, the model mounted read-only and
only the output folder writable.

Compiler flags: Coral, "Edge TPU Compiler" (https://coral.ai/docs/edgetpu/compiler/),
table 1: -o/--out_dir, -m/--min_runtime_version, -n/--num_segments, -d/--search_delegate,
-t/--timeout_sec, -s/--show_operations.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from importlib import resources

from edge.errors import EdgeportError, InputError

COMPILER = "edgetpu_compiler"
IMAGE_NAME = "edgeport/edgetpu-compiler"
CHOICES = ("auto", "local", "docker", "podman")

NO_COMPILER_HINT = (
    "get a compiler one of three ways: (1) install Coral's `edgetpu-compiler` package on an "
    "x86-64 Debian/Ubuntu (https://coral.ai/docs/edgetpu/compiler/) so `edgetpu_compiler` is "
    "on PATH; (2) run a Docker engine (edgeport builds the compiler image itself); "
    "(3) install Podman; then pass --compiler local|docker|podman or keep --compiler auto")


class CompilerUnavailable(EdgeportError):
    """No way to run the Edge TPU compiler here."""


class CompilerFailed(EdgeportError):
    """The compiler ran but failed, timed out, or wrote nothing."""


@dataclass
class CompileResult:
    backend: str
    command: list
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    seconds: float = 0.0


def dockerfile_path():
    """The Dockerfile shipped as package data (works from a wheel and from the checkout)."""
    return str(resources.files("converters.edgetpu").joinpath("Dockerfile"))


def dockerfile_hash():
    with open(dockerfile_path(), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def image_tag():
    return f"{IMAGE_NAME}:{dockerfile_hash()}"


def compiler_flags(min_runtime_version=None, num_segments=None, search_delegate=False,
                   timeout=None, show_operations=True):
    """edgetpu_compiler flags for the options (the output folder and model come after)."""
    flags = []
    if show_operations:
        flags.append("--show_operations")
    if min_runtime_version is not None:
        flags += ["--min_runtime_version", str(int(min_runtime_version))]
    if num_segments is not None:
        flags += ["--num_segments", str(int(num_segments))]
    if search_delegate:
        flags.append("--search_delegate")
    if timeout is not None:
        # The compiler's own timer (default 180 s); ours below is the hard stop.
        flags += ["--timeout_sec", str(max(1, int(timeout)))]
    return flags


def _run(cmd, timeout, on_timeout=None, env=None):
    """Run cmd in its own process group; on timeout kill the group (and call on_timeout)."""
    import time

    start = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env=env)
    except OSError as e:
        raise CompilerUnavailable(f"cannot start {cmd[0]}: {e.strerror}", NO_COMPILER_HINT) from None
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err, False, time.monotonic() - start
    except subprocess.TimeoutExpired:
        if on_timeout:
            on_timeout()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        return proc.returncode, out, err, True, time.monotonic() - start


class LocalBackend:
    name = "local"

    def availability(self):
        path = shutil.which(COMPILER)
        return (True, path) if path else (False, f"{COMPILER} is not on PATH")

    def command(self, model_path, out_dir, flags):
        return [shutil.which(COMPILER) or COMPILER, *flags, "--out_dir", out_dir, model_path]

    def compile(self, model_path, out_dir, flags, timeout, progress=None):
        cmd = self.command(os.path.abspath(model_path), os.path.abspath(out_dir), flags)
        rc, out, err, timed_out, secs = _run(cmd, timeout)
        return CompileResult(self.name, cmd, rc, out, err, timed_out, secs)


@dataclass
class ContainerBackend:
    engine: str                               # "docker" or "podman"
    probe_timeout: float = 15.0
    build_timeout: float = 1800.0

    @property
    def name(self):
        return self.engine

    def availability(self):
        exe = shutil.which(self.engine)
        if not exe:
            return False, f"{self.engine} is not installed"
        try:
            p = subprocess.run([exe, "info", "--format", "{{json .}}"], capture_output=True, text=True,
                               timeout=self.probe_timeout)
        except subprocess.TimeoutExpired:
            return False, f"{self.engine} did not answer within {self.probe_timeout:.0f} s"
        if p.returncode != 0:
            last = (p.stderr.strip().splitlines() or ["no output"])[-1]
            return False, f"{self.engine} is installed but its engine is not reachable: {last}"
        return True, exe

    def image_exists(self, tag):
        p = subprocess.run([self.engine, "image", "inspect", tag], capture_output=True, text=True,
                           timeout=self.probe_timeout)
        return p.returncode == 0

    def build_command(self, tag, context_dir):
        return [self.engine, "build", "--platform", "linux/amd64", "--tag", tag,
                "--file", os.path.join(context_dir, "Dockerfile"), context_dir]

    def ensure_image(self, progress=None):
        tag = image_tag()
        if self.image_exists(tag):
            return tag
        if progress:
            progress(f"building the Edge TPU compiler image {tag} with {self.engine} (once)")
        with tempfile.TemporaryDirectory(prefix="edgeport-compiler-") as ctx:
            # A context holding only the Dockerfile: nothing else of the user's is sent.
            shutil.copyfile(dockerfile_path(), os.path.join(ctx, "Dockerfile"))
            cmd = self.build_command(tag, ctx)
            rc, out, err, timed_out, _ = _run(cmd, self.build_timeout)
        if timed_out or rc != 0:
            tail = "\n".join((err or out or "").strip().splitlines()[-5:])
            raise CompilerUnavailable(
                f"{self.engine} could not build the compiler image {tag}"
                + (" (timed out)" if timed_out else f" (exit {rc}): {tail}"),
                "the build needs network access to deb.debian.org and packages.cloud.google.com")
        return tag

    def run_command(self, tag, model_path, out_dir, flags, container_name):
        model_path, out_dir = os.path.abspath(model_path), os.path.abspath(out_dir)
        inside = f"/models/in/{os.path.basename(model_path)}"
        cmd = [self.engine, "run", "--rm", "--network", "none", "--platform", "linux/amd64",
               "--name", container_name, "--user", f"{os.getuid()}:{os.getgid()}",
               "--env", "HOME=/tmp"]
        if self.engine == "podman":
            cmd += ["--userns", "keep-id"]        # rootless podman: keep the caller's uid inside
        cmd += ["--volume", f"{model_path}:{inside}:ro",
                "--volume", f"{out_dir}:/models/out:rw",
                "--workdir", "/models/out",
                tag, *flags, "--out_dir", "/models/out", inside]
        return cmd

    def compile(self, model_path, out_dir, flags, timeout, progress=None):
        tag = self.ensure_image(progress)
        container = f"edgeport-compile-{uuid.uuid4().hex[:12]}"
        cmd = self.run_command(tag, model_path, out_dir, flags, container)

        def kill_container():
            subprocess.run([self.engine, "kill", container], capture_output=True, timeout=30)

        rc, out, err, timed_out, secs = _run(cmd, timeout, on_timeout=kill_container)
        return CompileResult(self.name, cmd, rc, out, err, timed_out, secs)


def backend(name):
    if name == "local":
        return LocalBackend()
    if name in ("docker", "podman"):
        return ContainerBackend(name)
    raise InputError(f"unknown compiler backend {name!r}", f"choose one of {', '.join(CHOICES)}")


def select_backend(name="auto"):
    """The backend to use: the named one if it works, or for auto the first of local, docker,
    podman that works. Raises CompilerUnavailable naming the three ways to get a compiler."""
    names = ("local", "docker", "podman") if name in (None, "auto") else (name,)
    reasons = []
    for n in names:
        b = backend(n)
        ok, why = b.availability()
        if ok:
            return b
        reasons.append(why)
    tried = "; ".join(reasons)
    raise CompilerUnavailable(f"no Edge TPU compiler can run here ({tried})", NO_COMPILER_HINT)
