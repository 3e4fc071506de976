"""Interpreter factory: pick a TFLite backend, parse Edge TPU device strings, load the delegate."""

from __future__ import annotations

import importlib
import os
import platform
import re
import sys
from collections import namedtuple
from typing import TYPE_CHECKING, Any

from .errors import EdgeTPUError, InputError, MissingDependency, first_line
from .tflite_model import TFLiteModel

if TYPE_CHECKING:
    from _typeshed import StrPath

# Tried in this order when --runtime is not given.
BACKENDS = ("ai_edge_litert", "tflite_runtime", "tensorflow")
BACKEND_PACKAGES = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime",
                    "tensorflow": "tensorflow"}

EDGETPU_SHARED_LIB = {
    "Linux": "libedgetpu.so.1",
    "Darwin": "libedgetpu.1.dylib",
    "Windows": "edgetpu.dll",
}.get(platform.system(), "libedgetpu.so.1")

Backend = namedtuple("Backend", "name Interpreter load_delegate")
Device = namedtuple("Device", "kind spec")  # kind: auto | cpu | edgetpu; spec: '', 'usb:0', ...

_DEVICE_RE = re.compile(r"^(usb|pci)?(:\d+)?$")


def _import_backend(name: str) -> Backend:
    if name == "ai_edge_litert":
        mod = importlib.import_module("ai_edge_litert.interpreter")
        return Backend(name, mod.Interpreter, mod.load_delegate)
    if name == "tflite_runtime":
        mod = importlib.import_module("tflite_runtime.interpreter")
        return Backend(name, mod.Interpreter, mod.load_delegate)
    if name == "tensorflow":
        tf = importlib.import_module("tensorflow")
        return Backend(name, tf.lite.Interpreter, tf.lite.experimental.load_delegate)
    raise InputError(f"unknown runtime '{name}'", f"choose one of {', '.join(BACKENDS)}")


def _numpy_abi_hint(err: BaseException) -> str | None:
    text = str(err)
    if "NumPy 1.x" in text or "_ARRAY_API" in text or "numpy.core.multiarray" in text:
        return ("it was built against NumPy 1.x and cannot load under NumPy 2: use ai-edge-litert, "
                "or install 'numpy<2' beside tflite-runtime")
    return None


def load_backend(name: str | None = None) -> Backend:
    """The first TFLite backend that imports, or the one named by `name`."""
    names = [name] if name else list(BACKENDS)
    failures = []
    for n in names:
        try:
            return _import_backend(n)
        except InputError:
            raise
        except Exception as e:  # ImportError, or a binary built for another NumPy ABI
            hint = _numpy_abi_hint(e)
            if name and hint:
                raise InputError(f"runtime '{n}' failed to load: {hint}") from None
            failures.append((n, hint))
    if name:
        raise MissingDependency(BACKEND_PACKAGES[name], "edge", f"runtime '{name}'")
    detail = "; ".join(f"{n}: {h}" for n, h in failures if h)
    raise InputError("no TFLite interpreter is installed" + (f" ({detail})" if detail else ""),
                     "pip install ai-edge-litert (or 'edgeport[edge]'; on a Raspberry Pi with "
                     "NumPy<2, tflite-runtime)")


def parse_device(text: str | None) -> Device:
    """Parse a --device value: 'auto', 'cpu', or an Edge TPU spec like 'usb', 'usb:0', 'pci:1', ':0'."""
    text = (text or "auto").strip().lower()
    if text in ("auto", "cpu"):
        return Device(text, "")
    if text in ("edgetpu", "tpu"):
        return Device("edgetpu", "")
    if _DEVICE_RE.match(text) and text:
        return Device("edgetpu", text)
    raise InputError(f"invalid device '{text}'",
                     "use auto, cpu, usb, usb:N, pci, pci:N or :N")


def split_model_device(model: StrPath) -> tuple[str, str | None]:
    """'model.tflite@usb:0' -> ('model.tflite', 'usb:0'), as pycoral's examples accept."""
    path, sep, dev = str(model).rpartition("@")
    if sep and path and _DEVICE_RE.match(dev.lower()) and dev:
        return path, dev
    return str(model), None


def list_edge_tpus() -> list[Any] | None:
    """Edge TPUs seen by the real pycoral, or None when it is not installed (never required)."""
    try:
        from pycoral.utils import edgetpu  # the real pycoral, from Coral's apt repository
        return list(edgetpu.list_edge_tpus())
    except Exception:
        return None


# Run in a child process by probe_delegate: loads the delegate the way the parent would.
_PROBE_CODE = r"""
import importlib, json, sys
path, name, lib, spec = json.loads(sys.argv[1])
sys.path[:0] = [p for p in path if p not in sys.path]
if name == "tensorflow":
    load = importlib.import_module("tensorflow").lite.experimental.load_delegate
else:
    load = importlib.import_module(name + ".interpreter").load_delegate
try:
    load(lib, {"device": spec} if spec else {})
except Exception as e:
    print("EDGEPORT-PROBE-ERROR " + (str(e).strip().splitlines() or [type(e).__name__])[0])
    sys.exit(3)
print("EDGEPORT-PROBE-OK")
"""
PROBE_TIMEOUT = 120.0
_probed: dict[tuple[str, str], EdgeTPUError | None] = {}


def _runtime_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(BACKEND_PACKAGES.get(name, name))
    except metadata.PackageNotFoundError:
        return None


def _libedgetpu_package() -> str | None:
    """'libedgetpu1-std 16.0' from dpkg where there is one (Debian, Raspberry Pi OS), else None."""
    import shutil
    import subprocess

    if not shutil.which("dpkg-query"):
        return None
    try:
        p = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version} ${Status}\\n",
                            "libedgetpu1-std", "libedgetpu1-max"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = [ln.split()[:2] for ln in p.stdout.splitlines() if ln.endswith("installed") and "not-installed" not in ln]
    return " ".join(found[0]) if found else None


MISMATCH_HINT = (
    "Coral's libedgetpu1-std/-max 16.0 is built against TensorFlow 2.5, and newer TFLite runtimes "
    "are reported to crash loading it (google-coral/edgetpu issue 812). Install a libedgetpu built "
    "for this runtime's TensorFlow version (the community builds of feranick/libedgetpu), or use "
    "the TFLite runtime that library was built for; see the README's Raspberry Pi + Coral section")


def probe_delegate(backend: Backend, spec: str = "", timeout: float | None = None) -> EdgeTPUError | None:
    """Load the Edge TPU delegate in a child process first; None when that worked.

    A library built for another TensorFlow can crash the process that loads it (a segfault,
    which no `except` catches). The child takes the crash; this returns EdgeTPUError naming
    the runtime, its version and the libedgetpu package, or the child's own load error.
    Backends the child cannot import by name (tests' fakes) are not probed. Set
    EDGEPORT_DELEGATE_PROBE=0 to skip the probe.
    """
    import json
    import os
    import signal
    import subprocess

    if backend.name not in BACKENDS or os.environ.get("EDGEPORT_DELEGATE_PROBE") == "0":
        return None
    key = (backend.name, spec)
    if key in _probed:
        return _probed[key]
    arg = json.dumps([[p for p in sys.path if p], backend.name, EDGETPU_SHARED_LIB, spec])
    what = f"Edge TPU '{spec}'" if spec else "an Edge TPU"
    runtime = f"{backend.name} {_runtime_version(backend.name) or '(version unknown)'}"
    try:
        p = subprocess.run([sys.executable, "-c", _PROBE_CODE, arg], capture_output=True, text=True,
                           timeout=timeout or PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return EdgeTPUError(f"loading {EDGETPU_SHARED_LIB} for {what} with {runtime} did not finish within "
                            f"{timeout or PROBE_TIMEOUT:g} s", "replug the accelerator; is another process using it?")
    out = p.stdout.strip().splitlines()
    if p.returncode == 0 and out and out[-1] == "EDGEPORT-PROBE-OK":
        _probed[key] = None
        return None
    said = next((ln[len("EDGEPORT-PROBE-ERROR "):] for ln in out if ln.startswith("EDGEPORT-PROBE-ERROR ")), None)
    if said is not None:
        err = EdgeTPUError(f"Failed to load delegate from {EDGETPU_SHARED_LIB} for {what}: {said}",
                           "is a Coral device attached, libedgetpu installed and, for USB, the udev rule in "
                           "place? See the README's Raspberry Pi + Coral section")
    elif p.returncode < 0:
        try:
            sig = signal.Signals(-p.returncode).name
        except ValueError:
            sig = f"signal {-p.returncode}"
        lib = _libedgetpu_package() or EDGETPU_SHARED_LIB
        err = EdgeTPUError(f"loading the Edge TPU delegate crashed a probe process ({sig}): {lib} does not "
                           f"match the TFLite runtime {runtime}", MISMATCH_HINT)
    else:
        last = (p.stderr.strip().splitlines() or ["no output"])[-1]
        err = EdgeTPUError(f"probing the Edge TPU delegate with {runtime} failed (exit {p.returncode}): {last}",
                           MISMATCH_HINT if "undefined symbol" in last else None)
    return err      # failures are not cached: the device may be plugged in before the next try


def load_edgetpu_delegate(backend: Backend, spec: str = "") -> Any:
    """Load libedgetpu through `backend`; raise EdgeTPUError saying why it failed.

    The load is probed in a child process first (probe_delegate), so a library that crashes
    this runtime gives an error, not a segfault."""
    problem = probe_delegate(backend, spec)
    if problem is not None:
        raise problem
    options = {"device": spec} if spec else {}
    error = None
    # A Delegate whose library failed to load complains from __del__; that noise is not news.
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: None if "Delegate" in repr(u.object) else hook(u)
    try:
        return backend.load_delegate(EDGETPU_SHARED_LIB, options)
    except (ValueError, OSError, RuntimeError) as e:
        error = str(e)
    finally:
        if error is not None:  # the half-built Delegate is collected while the filter is on
            import gc

            gc.collect()
        sys.unraisablehook = hook
    what = f"Edge TPU '{spec}'" if spec else "an Edge TPU"
    raise EdgeTPUError(
        f"Failed to load delegate from {EDGETPU_SHARED_LIB} for {what}: {error}",
        "is a Coral device attached, libedgetpu installed and, for USB, the udev rule in place? "
        "See the README's Raspberry Pi + Coral section")


def _uncompiled_twin(model_path: StrPath) -> str | None:
    stem = str(model_path)
    if stem.endswith("_edgetpu.tflite"):
        return stem[: -len("_edgetpu.tflite")] + ".tflite"
    return None


MAX_THREADS = 256


def check_threads(threads: int | str | None) -> int | None:
    """None, or a thread count in 1..max(MAX_THREADS... bounded by the process limit): more
    threads than the system lets a process start used to crash the runtime (SIGSEGV)."""
    if threads is None:
        return None
    try:
        n = int(threads)
    except (TypeError, ValueError):
        raise InputError(f"--threads {threads!r} is not a number") from None
    top = MAX_THREADS
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NPROC)[0]
        if 0 < soft != resource.RLIM_INFINITY:
            top = min(top, max(1, soft // 2))
    except (ImportError, OSError, ValueError, AttributeError):
        pass
    if not 1 <= n <= top:
        raise InputError(f"--threads {n} is out of range",
                         f"pass 1..{top}; this machine has {os.cpu_count() or 1} CPUs")
    return n


def make_interpreter(model_path: StrPath, device: str | None = "auto", runtime: str | None = None,
                     num_threads: int | str | None = None) -> tuple[Any, dict[str, Any]]:
    """Build an allocated interpreter for `model_path` on the device asked for.

    Returns (interpreter, info) where info says which backend and device were used.
    A compiled model (it holds an edgetpu-custom-op) without a usable Edge TPU raises
    EdgeTPUError naming the uncompiled model to use on the CPU instead.
    """
    model_path, at_device = split_model_device(model_path)
    num_threads = check_threads(num_threads)
    dev = parse_device(at_device or device)
    model = TFLiteModel.load(model_path)
    compiled = model.is_edgetpu_compiled()
    backend = load_backend(runtime)

    delegates = []
    used = "cpu"
    if compiled and dev.kind == "cpu":
        raise _compiled_needs_tpu(model_path, "--device cpu was asked for")
    if dev.kind == "edgetpu" or (dev.kind == "auto" and compiled):
        tpus = list_edge_tpus() if dev.kind == "auto" else None
        if tpus == []:
            raise _compiled_needs_tpu(model_path, "pycoral sees no Edge TPU")
        try:
            delegates.append(load_edgetpu_delegate(backend, dev.spec))
        except EdgeTPUError as e:
            if compiled:
                raise _compiled_needs_tpu(model_path, e.message) from None
            raise
        used = "edgetpu" + (f":{dev.spec}" if dev.spec else "")

    kwargs: dict[str, Any] = {"model_path": str(model_path), "experimental_delegates": delegates or None}
    if num_threads:
        kwargs["num_threads"] = int(num_threads)
    allocated = True
    try:
        interpreter = backend.Interpreter(**kwargs)
        try:
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError):
            # open input dimensions (shape_signature -1) may not allocate at their 1-sized
            # default: the caller resizes the inputs to the shapes it runs, then allocates
            if not _has_open_inputs(interpreter):
                raise
            allocated = False
    except (ValueError, RuntimeError) as e:
        text = str(e)
        if "unresolved custom op" in text or "custom op" in text.lower():
            missing = ", ".join(c for c in model.custom_ops()) or "a custom op"
            raise InputError(f"{model_path} needs custom op(s) {missing}, which runtime "
                             f"'{backend.name}' does not provide",
                             "register the op's kernel or use a model without it") from None
        raise InputError(f"{backend.name} cannot load {model_path}: {first_line(e)}") from None
    info: dict[str, Any] = {"runtime": backend.name, "device": used, "edgetpu_compiled": compiled,
            "model": str(model_path)}
    if not allocated:
        info["allocated"] = False
    return interpreter, info


def _has_open_inputs(interpreter: Any) -> bool:
    for d in interpreter.get_input_details():
        sig = d.get("shape_signature")
        if sig is not None and any(int(x) < 0 for x in sig):
            return True
    return False


def _compiled_needs_tpu(model_path: StrPath, why: str) -> EdgeTPUError:
    twin = _uncompiled_twin(model_path)
    hint = ("run the uncompiled model on the CPU instead"
            + (f": {twin}" if twin else " (the .tflite before edgetpu_compiler)")
            + ", or attach a Coral Edge TPU")
    return EdgeTPUError(f"{model_path} is compiled for the Edge TPU and cannot run without one ({why})",
                        hint)
