"""Isolated environments for converters whose pins clash with edgeport's own (onnx2tf).

onnx2tf pins TensorFlow 2.19, NumPy 1.26 and onnx 1.19; edgeport runs TensorFlow 2.21 and
NumPy 2. So onnx2tf lives in its own virtual environment, which edgeport creates on first
use from a pinned requirements file shipped here (`onnx2tf.txt`), reuses afterwards and
drives as a subprocess:

    env = ensure("onnx2tf", progress)          # builds it once (minutes), then reuses it
    run(env, ["-i", "m.onnx", "-o", "out"], cwd=tmp, timeout=900)   # EdgeportError on failure
    info("onnx2tf")                            # where it lives, what is in it, how to rebuild

Where: `$EDGEPORT_TOOLENV_DIR`, else `$XDG_CACHE_HOME/edgeport/toolenv`, else
`~/.cache/edgeport/toolenv`, in a folder `<tool>-<hash>` whose hash covers the pinned
requirements, the Python version and the machine, so a new pin set gets a new folder and an
old one is never half-upgraded. The interpreter is the one running edgeport unless
`$EDGEPORT_TOOLENV_PYTHON` names another (the pins need Python 3.10-3.12). A folder
becomes usable only when `toolenv.json` (what pip installed) is written last; a build that
was interrupted is removed and redone. Two edgeport processes never build the same folder
at once (a lock beside it).

May import: edge/ and the converters root only; routes drive it.

Imports: edge, converters
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

from edge.errors import EdgeportError, InputError

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = "toolenv.json"
BUILD_LOG = "build.log"


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    requirements: str          # pinned requirements (the text of a requirements file)
    command: tuple             # argv prefix; argv[0] is looked up in the env's bin folder first
    what: str = ""             # one line: what the tool does for edgeport
    check: str = None          # a module the env must import after the install


def _read(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


TOOLS = {
    "onnx2tf": Tool("onnx2tf", _read("onnx2tf.txt"), ("onnx2tf",),
                    "ONNX -> TFLite float (NCHW image inputs become NHWC)", check="onnx2tf"),
}


def get_tool(name):
    if name not in TOOLS:
        raise InputError(f"no tool environment named '{name}'", f"known: {', '.join(sorted(TOOLS))}")
    return TOOLS[name]


def root_dir():
    """The folder holding every tool environment."""
    d = os.environ.get("EDGEPORT_TOOLENV_DIR")
    if d:
        return os.path.abspath(os.path.expanduser(d))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "edgeport", "toolenv")


def python_for_envs():
    return os.environ.get("EDGEPORT_TOOLENV_PYTHON") or sys.executable


def _python_version(python):
    if python == sys.executable:
        return "%d.%d" % sys.version_info[:2]
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise InputError(f"EDGEPORT_TOOLENV_PYTHON={python} cannot run: {e}") from None
    if out.returncode != 0:
        raise InputError(f"EDGEPORT_TOOLENV_PYTHON={python} cannot run: {out.stderr.strip()[:200]}")
    return out.stdout.strip()


def requirements_hash(tool, python_version):
    """12 hex digits naming one environment: pins + Python X.Y + machine + OS."""
    h = hashlib.sha256()
    for part in (tool.requirements, python_version, platform.machine(), sys.platform):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


@dataclasses.dataclass
class Env:
    tool: Tool
    path: str
    python_version: str

    @property
    def bin(self):
        return os.path.join(self.path, "Scripts" if os.name == "nt" else "bin")

    @property
    def python(self):
        return os.path.join(self.bin, "python.exe" if os.name == "nt" else "python")

    @property
    def manifest_path(self):
        return os.path.join(self.path, MANIFEST)

    def manifest(self):
        try:
            with open(self.manifest_path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    @property
    def ready(self):
        m = self.manifest()
        return bool(m) and m.get("hash") == os.path.basename(self.path).rsplit("-", 1)[-1] \
            and os.path.exists(self.python)


def env_for(name):
    """The Env (built or not) of tool `name` for the current pins and interpreter."""
    tool = get_tool(name)
    py = python_for_envs()
    version = _python_version(py)
    return Env(tool, os.path.join(root_dir(), f"{tool.name}-{requirements_hash(tool, version)}"), version)


def _freeze(env):
    out = subprocess.run([env.python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                         timeout=300)
    return sorted(line.strip() for line in out.stdout.splitlines() if line.strip())


def _tail(text, n=1):
    """The last `n` meaningful lines of a tool's output (ANSI colours and blanks removed)."""
    lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not set(ln) <= set("-=*#")]
    errors = [ln for ln in lines if re.search(r"\b(error|exception|failed)\b", ln, re.I)]
    pick = (errors or lines)[-n:]
    return " | ".join(ln[:300] for ln in pick) or "no output"


def _pip_install(env, req_file, log):
    """pip install the pinned requirements into env (the step tests replace with a fake)."""
    cmd = [env.python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
           "-r", req_file]
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    return proc.returncode


def _create_venv(env, with_pip):
    py = python_for_envs()
    cmd = [py, "-m", "venv"] + ([] if with_pip else ["--without-pip"]) + [env.path]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EdgeportError(f"cannot create the {env.tool.name} environment at {env.path}: "
                            f"{_tail(proc.stderr or proc.stdout)}",
                            "check that the Python interpreter has the venv module "
                            "(Debian: apt install python3-venv)")


def build(env, progress=None):
    """Create env from scratch (removing whatever is at its path); returns env."""
    say = progress or (lambda m: None)
    tool = env.tool
    if os.path.lexists(env.path):
        shutil.rmtree(env.path)
    os.makedirs(os.path.dirname(env.path), exist_ok=True)
    t0 = time.monotonic()
    say(f"toolenv: creating the {tool.name} environment at {env.path} (once; this takes minutes)")
    needs_pip = bool(tool.requirements.strip())
    _create_venv(env, with_pip=needs_pip)
    req_file = os.path.join(env.path, "requirements.txt")
    with open(req_file, "w", encoding="utf-8") as f:
        f.write(tool.requirements)
    log_path = os.path.join(env.path, BUILD_LOG)
    if needs_pip:
        say(f"toolenv: pip install -r {req_file} (log: {log_path})")
        with open(log_path, "w", encoding="utf-8") as log:
            code = _pip_install(env, req_file, log)
        if code != 0:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            shutil.rmtree(env.path, ignore_errors=True)
            raise EdgeportError(f"could not install {tool.name}'s pinned requirements: {_tail(text)}",
                                f"it needs network access to PyPI and Python 3.10-3.12 (this is "
                                f"{env.python_version}; another interpreter: EDGEPORT_TOOLENV_PYTHON); "
                                f"then: edgeport toolenv {tool.name} --rebuild")
    if tool.check:
        proc = subprocess.run([env.python, "-c", f"import {tool.check}"], capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            shutil.rmtree(env.path, ignore_errors=True)
            raise EdgeportError(f"the {tool.name} environment was installed but `import {tool.check}` "
                                f"fails: {_tail(proc.stderr)}",
                                f"edgeport toolenv {tool.name} --rebuild")
    manifest = {"tool": tool.name, "hash": os.path.basename(env.path).rsplit("-", 1)[-1],
                "python": env.python_version, "interpreter": python_for_envs(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.monotonic() - t0, 1),
                "packages": _freeze(env) if needs_pip else []}
    tmp = env.manifest_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, env.manifest_path)      # last: the folder is usable from here on
    say(f"toolenv: {tool.name} ready in {manifest['build_seconds']:.0f} s")
    return env


@contextlib.contextmanager
def _locked(env):
    from converters.atomic import output_lock

    os.makedirs(os.path.dirname(env.path), exist_ok=True)
    with output_lock(env.path):
        yield


def ensure(name, progress=None, rebuild=False):
    """The ready Env of tool `name`, built first if needed (or if `rebuild`)."""
    env = env_for(name)
    if env.ready and not rebuild:
        return env
    with _locked(env):
        if env.ready and not rebuild:   # another process built it while we waited
            return env
        return build(env, progress)


def remove(name):
    """Delete every environment of tool `name` (all hashes); returns the paths removed."""
    tool = get_tool(name)
    root = root_dir()
    gone = []
    if os.path.isdir(root):
        for entry in sorted(os.listdir(root)):
            if re.fullmatch(re.escape(tool.name) + r"-[0-9a-f]{12}", entry):
                shutil.rmtree(os.path.join(root, entry))
                gone.append(os.path.join(root, entry))
    return gone


def _held(lock):
    """True when another process holds the build lock `lock` right now."""
    try:
        import fcntl
    except ImportError:
        return os.path.exists(lock)
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)            # closing drops a lock we may have taken
    return False


def info(name):
    """What `edgeport toolenv` shows: where, whether built, what is in it, how to rebuild."""
    env = env_for(name)
    m = env.manifest() if env.ready else None
    pins = [ln.strip() for ln in env.tool.requirements.splitlines()
            if ln.strip() and not ln.strip().startswith("#")]
    others = []
    root = root_dir()
    if os.path.isdir(root):
        others = [os.path.join(root, e) for e in sorted(os.listdir(root))
                  if e.startswith(env.tool.name + "-") and os.path.join(root, e) != env.path
                  and not e.endswith(".lock") and not e.startswith(".")]
    lock = os.path.join(os.path.dirname(env.path), f".{os.path.basename(env.path)}.lock")
    return {"tool": name, "what": env.tool.what, "folder": env.path, "ready": bool(m),
            "building": not m and _held(lock),
            "python": env.python_version, "interpreter": python_for_envs(),
            "requirements": os.path.join(HERE, f"{name}.txt"), "pins": pins,
            "installed": (m or {}).get("packages"), "created": (m or {}).get("created"),
            "build_seconds": (m or {}).get("build_seconds"), "stale_envs": others,
            "rebuild": f"edgeport toolenv {name} --rebuild",
            "remove": f"edgeport toolenv {name} --remove"}


def run(env, args, cwd, timeout=None, log_path=None):
    """Run the tool with `args` in `cwd`, its env's bin first on PATH. Returns the output text.

    A non-zero exit, a timeout or a missing executable raise EdgeportError with the tool's
    last error line; the whole output goes to `log_path` when given.
    """
    exe = env.tool.command[0]
    local = os.path.join(env.bin, exe)
    argv = [local if os.path.exists(local) else exe] + list(env.tool.command[1:]) + [str(a) for a in args]
    environ = dict(os.environ)
    environ["PATH"] = env.bin + os.pathsep + environ.get("PATH", "")
    environ["VIRTUAL_ENV"] = env.path
    for k in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        environ.pop(k, None)            # nothing of edgeport's own environment leaks in
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    try:
        proc = subprocess.run(argv, cwd=cwd, env=environ, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise EdgeportError(f"{exe} is not in the {env.tool.name} environment at {env.path}",
                            f"edgeport toolenv {env.tool.name} --rebuild") from None
    except subprocess.TimeoutExpired as e:
        text = (e.output or b"").decode("utf-8", "replace")
        if log_path:
            _write_log(log_path, text)
        raise EdgeportError(f"{env.tool.name} did not finish within {timeout:.0f} s "
                            f"(last output: {_tail(text)})", "raise --timeout") from None
    text = proc.stdout.decode("utf-8", "replace")
    if log_path:
        _write_log(log_path, text)
    if proc.returncode != 0:
        raise EdgeportError(f"{env.tool.name} failed (exit {proc.returncode}): {_tail(text)}",
                            f"the full output is in {log_path}" if log_path else None)
    return text


def _write_log(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
