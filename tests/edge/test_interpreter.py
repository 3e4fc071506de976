import builtins
import sys

import pytest

from edge import interpreter as it
from edge.errors import EdgeTPUError, InputError, MissingDependency


@pytest.mark.parametrize("text,expected", [
    ("auto", ("auto", "")), ("cpu", ("cpu", "")), ("CPU", ("cpu", "")), (None, ("auto", "")),
    ("usb", ("edgetpu", "usb")), ("usb:0", ("edgetpu", "usb:0")), ("usb:12", ("edgetpu", "usb:12")),
    ("pci", ("edgetpu", "pci")), ("pci:1", ("edgetpu", "pci:1")), (":0", ("edgetpu", ":0")),
    ("edgetpu", ("edgetpu", "")),
])
def test_parse_device(text, expected):
    assert tuple(it.parse_device(text)) == expected


@pytest.mark.parametrize("bad", ["usb0", "gpu", "usb:", "pci:x", "::1", "usb:0:1", "usb:-1"])
def test_parse_device_rejects(bad):
    with pytest.raises(InputError, match="invalid device"):
        it.parse_device(bad)


@pytest.mark.parametrize("text,expected", [
    ("m.tflite@usb:0", ("m.tflite", "usb:0")), ("m.tflite@pci", ("m.tflite", "pci")),
    ("m.tflite", ("m.tflite", None)), ("dir@x/m.tflite", ("dir@x/m.tflite", None)),
    ("m.tflite@:1", ("m.tflite", ":1")),
])
def test_split_model_device(text, expected):
    assert it.split_model_device(text) == expected


def test_delegate_library_by_platform():
    assert it.EDGETPU_SHARED_LIB in ("libedgetpu.so.1", "libedgetpu.1.dylib", "edgetpu.dll")


def test_backend_order_and_unknown():
    assert it.BACKENDS == ("ai_edge_litert", "tflite_runtime", "tensorflow")
    assert it.load_backend().name == "ai_edge_litert"
    with pytest.raises(InputError, match="unknown runtime"):
        it.load_backend("onnx")


def test_no_interpreter_installed(monkeypatch):
    real = builtins.__import__

    def fake(name, *a, **k):
        if name.split(".")[0] in ("ai_edge_litert", "tflite_runtime", "tensorflow"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.setattr(it.importlib, "import_module", lambda n: fake(n))
    with pytest.raises(InputError, match="no TFLite interpreter is installed") as e:
        it.load_backend()
    assert "ai-edge-litert" in str(e.value)
    with pytest.raises(MissingDependency, match="tflite-runtime"):
        it.load_backend("tflite_runtime")


def test_numpy1_abi_failure_is_explained(monkeypatch):
    def broken(name):
        raise ImportError("A module that was compiled using NumPy 1.x cannot be run in NumPy 2.4.0")

    monkeypatch.setattr(it, "_import_backend", broken)
    with pytest.raises(InputError, match="NumPy 1.x"):
        it.load_backend("tflite_runtime")


def test_delegate_failure_is_one_clear_error():
    backend = it.load_backend()
    with pytest.raises(EdgeTPUError, match="Failed to load delegate from libedgetpu") as e:
        it.load_edgetpu_delegate(backend, "usb:0")
    assert "usb:0" in str(e.value) and "udev" in str(e.value)


def test_delegate_options_passed(monkeypatch):
    seen = {}

    def fake_load(lib, options):
        seen.update(lib=lib, options=options)
        return "delegate"

    backend = it.Backend("fake", None, fake_load)
    assert it.load_edgetpu_delegate(backend, "pci:1") == "delegate"
    assert seen == {"lib": it.EDGETPU_SHARED_LIB, "options": {"device": "pci:1"}}
    it.load_edgetpu_delegate(backend, "")
    assert seen["options"] == {}


def test_plain_model_runs_on_cpu(tiny):
    interp, info = it.make_interpreter(tiny["float"])
    assert info["device"] == "cpu" and info["runtime"] == "ai_edge_litert"
    assert not info["edgetpu_compiled"]


def test_plain_model_on_requested_tpu_fails_clearly(tiny):
    with pytest.raises(EdgeTPUError, match="Failed to load delegate"):
        it.make_interpreter(tiny["float"], device="usb")


def test_compiled_model_without_tpu(coral):
    model = coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    for device in ("auto", "cpu"):
        with pytest.raises(EdgeTPUError) as e:
            it.make_interpreter(model, device=device)
        text = str(e.value)
        assert "compiled for the Edge TPU" in text
        assert "mobilenet_v1_0.25_128_quant.tflite" in text  # points to the CPU model
        assert "unresolved custom op" not in text


def test_unknown_custom_op_is_named(coral):
    with pytest.raises(InputError, match="PosenetDecoderOp"):
        it.make_interpreter(coral / "posenet_mobilenet_v1_075_353_481_16_quant_decoder.tflite")


def test_failed_delegate_leaves_no_noise_on_stderr(tiny):
    import subprocess
    import sys

    code = ("from edge import interpreter as it\n"
            "try:\n it.load_edgetpu_delegate(it.load_backend(), 'usb')\n"
            "except it.EdgeTPUError as e:\n print('caught')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "caught"
    assert "Exception ignored" not in r.stderr and "Traceback" not in r.stderr, r.stderr


# -- the delegate is probed in a child process first ------------------------------

FAKE_RUNTIME = '''
import os, signal
MODE = {mode!r}

def load_delegate(lib, options=None):
    if MODE == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)      # what an ABI-mismatched libedgetpu does
    if MODE == "error":
        raise ValueError("Failed to load delegate from " + lib + "\\nmore detail")
    return "delegate:" + lib

class Interpreter:
    pass
'''


def _fake_tflite_runtime(tmp_path, monkeypatch, mode):
    """A `tflite_runtime` package on sys.path whose load_delegate crashes, fails or works."""
    pkg = tmp_path / mode / "tflite_runtime"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "interpreter.py").write_text(FAKE_RUNTIME.format(mode=mode))
    monkeypatch.syspath_prepend(str(tmp_path / mode))
    for name in ("tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(it, "_probed", {})
    monkeypatch.delenv("EDGEPORT_DELEGATE_PROBE", raising=False)
    return it.load_backend("tflite_runtime")


def test_delegate_that_crashes_is_one_clear_error(tmp_path, monkeypatch):
    backend = _fake_tflite_runtime(tmp_path, monkeypatch, "segfault")
    monkeypatch.setattr(it, "_libedgetpu_package", lambda: "libedgetpu1-std 16.0")
    with pytest.raises(EdgeTPUError) as e:       # the parent is still alive to raise it
        it.load_edgetpu_delegate(backend, "usb")
    text = str(e.value)
    assert "crashed a probe process (SIGSEGV)" in text
    assert "libedgetpu1-std 16.0 does not match the TFLite runtime tflite_runtime" in text
    assert "issue 812" in text and "feranick/libedgetpu" in text


def test_delegate_load_error_comes_from_the_probe(tmp_path, monkeypatch):
    backend = _fake_tflite_runtime(tmp_path, monkeypatch, "error")
    with pytest.raises(EdgeTPUError) as e:
        it.load_edgetpu_delegate(backend, "usb:0")
    assert str(e.value).startswith(f"Failed to load delegate from {it.EDGETPU_SHARED_LIB} for Edge TPU 'usb:0': "
                                   f"Failed to load delegate from {it.EDGETPU_SHARED_LIB}")
    assert "more detail" not in str(e.value)


def test_delegate_that_loads_is_loaded_in_process_after_the_probe(tmp_path, monkeypatch):
    backend = _fake_tflite_runtime(tmp_path, monkeypatch, "ok")
    assert it.load_edgetpu_delegate(backend, "") == f"delegate:{it.EDGETPU_SHARED_LIB}"
    assert it._probed == {("tflite_runtime", ""): None}
    # the probe can be turned off; then the load happens in-process only
    monkeypatch.setenv("EDGEPORT_DELEGATE_PROBE", "0")
    monkeypatch.setattr(it, "_probed", {})
    assert it.load_edgetpu_delegate(backend, "usb") == f"delegate:{it.EDGETPU_SHARED_LIB}"
    assert it._probed == {}
