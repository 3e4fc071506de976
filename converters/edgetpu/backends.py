"""Ways to run edgetpu_compiler: on PATH (local), or in a container (docker, podman).

Every backend runs `edgetpu_compiler [flags] -o OUT_DIR MODEL` under a timeout and kills
it (its whole process group, or the container by name) when the timeout passes. The
container image is built from the Dockerfile shipped in this package
(`converters/edgetpu/Dockerfile`) and tagged with a hash of that file, so editing the
Dockerfile makes a new image and an old one is never reused by mistake. Containers run
with `--rm --network none`, as the calling user's uid:gid, the model mounted read-only and
only the output folder writable.

Engine settings, each from ConvertOptions first, then the environment:
- runtime: `container_runtime` / EDGEPORT_CONTAINER_RUNTIME (e.g. `runc` where podman's
  default crun fails with "cgroups in hybrid mode not supported"); podman takes it as a
  global `--runtime`, docker as `docker run --runtime`.
- rlimits: `container_ulimits` / EDGEPORT_CONTAINER_ULIMITS, comma-separated
  (`nofile=1024:1024,nproc=1024:1024` where the engine cannot raise the host's limits:
  "setrlimit RLIMIT_NOFILE: Operation not permitted"); passed as `--ulimit` to build and run.
- image: `compiler_image` / EDGEPORT_COMPILER_IMAGE, an existing image to run instead of
  building the shipped Dockerfile.
- base: `compiler_base_image` / EDGEPORT_COMPILER_BASE_IMAGE, podman only: build the
  Dockerfile `--from` this image instead of its pinned debian base (for machines without a
  registry).
- user: the caller's uid:gid, except for root, which runs the compiler as
  EDGEPORT_CONTAINER_USER (default 1000:1000): the compiler never runs as root.
What was used is in `CompileResult.container` (engine, runtime, image, user, ulimits).

Compiler flags: Coral, "Edge TPU Compiler" (https://coral.ai/docs/edgetpu/compiler/),
table 1: -o/--out_dir, -m/--min_runtime_version, -n/--num_segments, -d/--search_delegate,
-t/--timeout_sec, -s/--show_operations.
"""

import hashlib
import os
import re
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


_ULIMIT = re.compile(r"^[a-z_]+=-?\d+(:-?\d+)?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]*$")
_USER = re.compile(r"^\d+(:\d+)?$")


def _setting(options, attr, env):
    value = getattr(options, attr) if options is not None else None
    return value if value not in (None, "", (), []) else (os.environ.get(env) or None)


def container_settings(options=None):
    """{runtime, ulimits, image, base_image, user} from options, then EDGEPORT_* variables.

    Raises InputError for a malformed value (they end up on an engine's command line)."""
    runtime = _setting(options, "container_runtime", "EDGEPORT_CONTAINER_RUNTIME")
    ulimits = _setting(options, "container_ulimits", "EDGEPORT_CONTAINER_ULIMITS")
    if isinstance(ulimits, str):
        ulimits = [u.strip() for u in ulimits.split(",") if u.strip()]
    ulimits = list(ulimits or [])
    image = _setting(options, "compiler_image", "EDGEPORT_COMPILER_IMAGE")
    base = _setting(options, "compiler_base_image", "EDGEPORT_COMPILER_BASE_IMAGE")
    user = os.environ.get("EDGEPORT_CONTAINER_USER") or "1000:1000"
    for u in ulimits:
        if not _ULIMIT.match(u):
            raise InputError(f"bad container ulimit {u!r}", "write NAME=SOFT[:HARD], e.g. nofile=1024:1024")
    for what, v in (("container runtime", runtime), ("compiler image", image), ("compiler base image", base)):
        if v is not None and not _NAME.match(v):
            raise InputError(f"bad {what} {v!r}", "a name such as runc, or an image such as localhost/x:tag")
    if not _USER.match(user) or user.split(":")[0] == "0":
        raise InputError(f"bad EDGEPORT_CONTAINER_USER {user!r}", "a non-root UID:GID such as 1000:1000")
    return {"runtime": runtime, "ulimits": ulimits, "image": image, "base_image": base, "user": user}


def build_failure_line(text):
    """One line for a failed image build: the step that failed and the last error it printed."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    step = None
    for ln in lines:
        m = re.match(r"^(?:STEP|Step) (\d+/\d+)\s*:\s*(.*)$", ln) or \
            re.match(r"^#\d+ \[(?:[\w-]+ )?(\d+/\d+)\] (.*)$", ln)
        if m:
            step = (m.group(1), m.group(2))
    if not step:
        m = next((re.search(r'building at STEP "(.*?)"', ln) for ln in reversed(lines)
                  if 'building at STEP "' in ln), None)
        if m:
            step = ("?", m.group(1))
    cause = None
    for ln in reversed(lines):
        if re.search(r"(^E: |^curl: |^gpg: |[Ee]rror|[Ff]ailed|[Cc]ould not|[Uu]nable to|not found|denied)", ln) \
                and not ln.startswith(("Error: building at STEP", "STEP ", "Step ", "+ ")):
            cause = ln
            break
    command = next((ln[2:] for ln in reversed(lines) if ln.startswith("+ ")), None)   # `set -x` trace
    exit_code = next((m.group(1) for m in (re.search(r"exit (?:status|code):? (\d+)", ln) for ln in reversed(lines))
                      if m), None)
    parts = []
    if step:
        cmd = " ".join(step[1].split())
        cmd = cmd if len(cmd) <= 60 else cmd[:57] + "..."
        at = ""
        if command:
            at = f" at `{command if len(command) <= 100 else command[:97] + '...'}`"
        parts.append(f"step {step[0]} ({cmd}) failed{at}")
    if cause:
        parts.append(cause)
    if exit_code:
        parts.append(f"exit {exit_code}")
    return ": ".join(parts[:2]) + (f" ({parts[2]})" if len(parts) > 2 else "") if parts else \
        (lines[-1] if lines else "no output")


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
    container: dict = None        # engine, runtime, image, user, ulimits (container backends)


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

    def describe(self, tag=None):
        return f"local {shutil.which(COMPILER) or COMPILER}"

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
    runtime: str = None                       # e.g. "runc" (see container_settings)
    ulimits: tuple = ()                       # e.g. ("nofile=1024:1024",)
    image: str = None                         # an existing image to run instead of building one
    base_image: str = None                    # podman build --from (replaces the Dockerfile's FROM)
    root_user: str = "1000:1000"              # who runs the compiler when the caller is root

    @property
    def name(self):
        return self.engine

    def _engine(self):
        """The engine's argv prefix: podman takes the OCI runtime as a global option."""
        cmd = [self.engine]
        if self.engine == "podman" and self.runtime:
            cmd += ["--runtime", self.runtime]
        return cmd

    def _ulimit_flags(self):
        return [f for u in self.ulimits for f in ("--ulimit", u)]

    def user(self):
        """uid:gid inside the container: the caller's, or a non-root one when the caller is root."""
        return self.root_user if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"

    def describe(self, tag=None):
        """What runs the compiler, e.g. "podman (runtime runc, image localhost/x:1, user 1000:1000)"."""
        bits = [f"runtime {self.runtime or 'default'}", f"image {tag or self.image or image_tag()}",
                f"user {self.user()}"]
        if self.ulimits:
            bits.append("ulimits " + ",".join(self.ulimits))
        return f"{self.engine} ({', '.join(bits)})"

    def availability(self):
        exe = shutil.which(self.engine)
        if not exe:
            return False, f"{self.engine} is not installed"
        try:
            p = subprocess.run([*self._engine(), "info", "--format", "{{json .}}"], capture_output=True,
                               text=True, timeout=self.probe_timeout)
        except subprocess.TimeoutExpired:
            return False, f"{self.engine} did not answer within {self.probe_timeout:.0f} s"
        if p.returncode != 0:
            last = (p.stderr.strip().splitlines() or ["no output"])[-1]
            return False, f"{self.engine} is installed but its engine is not reachable: {last}"
        return True, exe

    def image_exists(self, tag):
        p = subprocess.run([*self._engine(), "image", "inspect", tag], capture_output=True, text=True,
                           timeout=self.probe_timeout)
        return p.returncode == 0

    def build_command(self, tag, context_dir):
        cmd = [*self._engine(), "build", "--platform", "linux/amd64", "--tag", tag]
        if self.base_image:
            if self.engine != "podman":
                raise InputError(f"{self.engine} build cannot replace the Dockerfile's base image",
                                 "use --compiler podman with a base image, or let docker pull the pinned one")
            cmd += ["--from", self.base_image]
        cmd += self._ulimit_flags()
        return cmd + ["--file", os.path.join(context_dir, "Dockerfile"), context_dir]

    def ensure_image(self, progress=None):
        if self.image:
            if not self.image_exists(self.image):
                raise CompilerUnavailable(f"{self.engine} has no image {self.image}",
                                          "build it first, or unset the compiler image to build the shipped one")
            return self.image
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
            why = "timed out" if timed_out else build_failure_line((out or "") + "\n" + (err or ""))
            raise CompilerUnavailable(
                f"{self.engine} could not build the compiler image {tag}: {why}",
                "the build needs network access to deb.debian.org and packages.cloud.google.com "
                "(Coral's apt repository); or pass an existing image (EDGEPORT_COMPILER_IMAGE)")
        return tag

    def run_command(self, tag, model_path, out_dir, flags, container_name):
        model_path, out_dir = os.path.abspath(model_path), os.path.abspath(out_dir)
        inside = f"/models/in/{os.path.basename(model_path)}"
        cmd = [*self._engine(), "run", "--rm", "--network", "none", "--platform", "linux/amd64",
               "--name", container_name, "--user", self.user(),
               "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "--env", "HOME=/tmp"]
        if self.engine == "docker" and self.runtime:
            cmd += ["--runtime", self.runtime]
        cmd += self._ulimit_flags()
        if self.engine == "podman" and os.getuid() != 0:
            cmd += ["--userns", "keep-id"]        # rootless podman: keep the caller's uid inside
        cmd += ["--volume", f"{model_path}:{inside}:ro",
                "--volume", f"{out_dir}:/models/out:rw",
                "--workdir", "/models/out",
                tag, *flags, "--out_dir", "/models/out", inside]
        return cmd

    def remove_container(self, name):
        """Kill and remove a container by name (after a timeout); errors are ignored."""
        for sub in (["kill", name], ["rm", "--force", name]):
            try:
                subprocess.run([*self._engine(), *sub], capture_output=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                pass

    def compile(self, model_path, out_dir, flags, timeout, progress=None):
        tag = self.ensure_image(progress)
        container = f"edgeport-compile-{uuid.uuid4().hex[:12]}"
        if os.getuid() == 0:
            # The compiler runs as a non-root uid: it must be able to write the (private) output
            # folder and read the staged model.
            uid, _, gid = self.root_user.partition(":")
            os.chown(out_dir, int(uid), int(gid or uid))
            os.chmod(model_path, 0o644)
            os.chmod(os.path.dirname(os.path.abspath(model_path)), 0o755)
        cmd = self.run_command(tag, model_path, out_dir, flags, container)
        info = {"engine": self.engine, "runtime": self.runtime or "default", "image": tag,
                "user": self.user(), "ulimits": list(self.ulimits), "container": container}
        rc, out, err, timed_out, secs = _run(cmd, timeout, on_timeout=lambda: self.remove_container(container))
        if timed_out:
            self.remove_container(container)  # the client is gone; make sure the container is too
        return CompileResult(self.name, cmd, rc, out, err, timed_out, secs, container=info)


def backend(name, options=None):
    if name == "local":
        return LocalBackend()
    if name in ("docker", "podman"):
        s = container_settings(options)
        return ContainerBackend(name, runtime=s["runtime"], ulimits=tuple(s["ulimits"]), image=s["image"],
                                base_image=s["base_image"], root_user=s["user"])
    raise InputError(f"unknown compiler backend {name!r}", f"choose one of {', '.join(CHOICES)}")


def select_backend(name="auto", options=None):
    """The backend to use: the named one if it works, or for auto the first of local, docker,
    podman that works. Raises CompilerUnavailable naming the three ways to get a compiler."""
    names = ("local", "docker", "podman") if name in (None, "auto") else (name,)
    reasons = []
    for n in names:
        b = backend(n, options)
        ok, why = b.availability()
        if ok:
            return b
        reasons.append(why)
    tried = "; ".join(reasons)
    raise CompilerUnavailable(f"no Edge TPU compiler can run here ({tried})", NO_COMPILER_HINT)
