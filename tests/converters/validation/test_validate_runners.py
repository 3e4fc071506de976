"""Every validation runner on tiny models built here: each pair of formats must validate."""

import json
import os
import sys

import numpy as np
import pytest

from converters.artefact import Artefact
from converters.validation.comparator import Tolerances
from converters.validation.validate import PASSED, ValidateOptions, validate
from edgeport.cli import main

SPEC = {"size": [16, 16], "layout": "NHWC", "mean": [127.5], "std": [127.5]}
LABELS = ["red", "green", "blue"]


def make_net():
    """The module factory used by --torch-model (a tiny NCHW classifier)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4, 5)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return self.fc(y.mean(dim=(2, 3)))

    return Net()


def color_keras():
    """Keras NHWC classifier: logits = mean of relu(channel - 0.2), i.e. red/green/blue."""
    import keras

    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(3, 1, activation="relu", name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, name="logits")(x)
    m = keras.Model(inp, out)
    m.get_layer("conv").set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3),
                                     np.full(3, -0.2, np.float32)])
    m.get_layer("logits").set_weights([3 * np.eye(3, dtype=np.float32), np.zeros(3, np.float32)])
    return m


def color_images(folder, per_class=4, seed=1):
    """Solid-ish colour images in one folder (flat) and per class (for eval)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    flat = folder / "flat"
    flat.mkdir(parents=True)
    for ci, name in enumerate(LABELS):
        (folder / "classes" / name).mkdir(parents=True)
        for i in range(per_class):
            px = rng.integers(0, 90, size=(20, 24, 3))
            px[:, :, ci] = rng.integers(150, 256, size=(20, 24))
            im = Image.fromarray(px.astype(np.uint8))
            im.save(flat / f"{name}_{i}.png")
            im.save(folder / "classes" / name / f"{i}.png")
    return flat, folder / "classes"


def tflite_from_keras(model, path, calibration=None):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if calibration is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([x] for x in calibration)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    path.write_bytes(conv.convert())
    return path


def calibration_arrays(flat):
    from converters.quantize.calibration import load_calibration

    return list(load_calibration(str(flat), SPEC, count=100).arrays())


def with_sidecar(path, fmt=None, **md):
    a = Artefact.open(str(path), fmt)
    a.metadata.update(md)
    a.write_sidecar()
    return Artefact.open(str(path), fmt)


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import torch

    d = tmp_path_factory.mktemp("runners")
    out = {}
    torch.manual_seed(0)
    net = make_net().eval()
    x = torch.rand(1, 3, 8, 8)
    ts = torch.jit.trace(net, x)
    ts.save(str(d / "net.torchscript.pt"))
    out["torchscript"] = d / "net.torchscript.pt"
    ep = torch.export.export(net, (x,))
    torch.export.save(ep, str(d / "net.pt2"))
    out["pt2"] = d / "net.pt2"
    torch.save(net.state_dict(), str(d / "net_state.pt"))
    out["state"] = d / "net_state.pt"
    torch.onnx.export(net, (x,), str(d / "net.onnx"), input_names=["input"],
                      output_names=["logits"], dynamo=False)
    out["onnx"] = d / "net.onnx"
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(d / "net.ort")
    so.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(d / "net.onnx"), so, providers=["CPUExecutionProvider"])
    out["ort"] = d / "net.ort"

    import keras

    keras.utils.set_random_seed(0)
    km = color_keras()
    km.save(str(d / "color.keras"))
    out["keras"] = d / "color.keras"
    km.export(str(d / "color_savedmodel"), verbose=False)
    out["savedmodel"] = d / "color_savedmodel"
    out["tflite"] = tflite_from_keras(km, d / "color_float.tflite")
    flat, classes = color_images(d / "images")
    out["images"], out["classes"] = flat, classes
    out["int8"] = tflite_from_keras(km, d / "color_int8.tflite", calibration_arrays(flat))
    for k in ("keras", "savedmodel", "tflite", "int8"):
        fmt = "savedmodel" if k == "savedmodel" else None
        with_sidecar(out[k], fmt, preprocessing=SPEC, labels=LABELS)
    out["dir"] = d
    return out


def _run(src, conv, **kw):
    kw.setdefault("trust_pickle", True)  # the test built these TorchScript/.pt2 files itself
    return validate(Artefact.open(str(src)), [Artefact.open(str(c)) for c in conv],
                    ValidateOptions(**kw))


def test_torchscript_vs_onnx_and_ort(models):
    rep = _run(models["torchscript"], [models["onnx"], models["ort"]], input_shape=(1, 3, 8, 8))
    assert rep.passed and rep.exit_code == 0
    for r in rep.results:
        assert r.status == PASSED
        (o,) = r.comparison.outputs
        assert o.mode == "numeric" and o.max_abs < 1e-4 and o.samples == 10
        assert o.converted_name == "logits"


def test_exported_program_vs_onnx(models):
    rep = _run(models["pt2"], [models["onnx"]])
    assert rep.passed, rep.results[0].summary_line()
    assert rep.source["format"] == "torch-export"


def test_module_factory_vs_ort(models):
    src = Artefact(str(models["state"]), "torch-module", {})
    rep = validate(src, [Artefact.open(str(models["ort"]))],
                   ValidateOptions(torch_model=f"{__name__}:make_net", input_shape=(1, 3, 8, 8)))
    assert rep.passed, rep.results[0].summary_line()


def test_keras_vs_savedmodel_and_tflite(models):
    rep = _run(models["keras"], [models["savedmodel"], models["tflite"]])
    assert [r.status for r in rep.results] == [PASSED, PASSED]
    assert rep.inputs == "10 random samples (seed 0)"
    line = rep.results[1].summary_line()
    assert line.startswith("valid: top-1 10/10, cosine 1.0000"), line


def test_int8_judged_by_agreement_on_images(models):
    rep = _run(models["keras"], [models["int8"]], inputs=str(models["images"]))
    (r,) = rep.results
    assert r.status == PASSED, r.summary_line()
    (o,) = r.comparison.outputs
    assert o.mode == "agreement" and o.is_classifier
    assert o.top1_agree == 12 and o.samples == 12 and o.cosine > 0.99
    # the same pair judged by float tolerances does not pass: int8 is not bit-exact
    strict = _run(models["keras"], [models["int8"]], inputs=str(models["images"]),
                  tolerances=Tolerances(mode="numeric"))
    assert strict.exit_code == 1


def test_coreml_numbers_on_linux_by_the_reference_executor(models):
    if sys.platform == "darwin":
        pytest.skip("on macOS Core ML itself runs the model")
    import coremltools as ct
    import torch

    from converters.validation.runners.coreml import EXECUTOR_NOTE

    ts = torch.jit.load(str(models["torchscript"]))
    ml = ct.convert(ts, inputs=[ct.TensorType(name="input", shape=(1, 3, 8, 8))],
                    convert_to="mlprogram")
    path = models["dir"] / "net.mlpackage"
    ml.save(str(path))
    rep = _run(models["torchscript"], [path], input_shape=(1, 3, 8, 8))
    (r,) = rep.results
    assert r.status == PASSED and rep.exit_code == 0, r.summary_line()
    assert EXECUTOR_NOTE in r.summary_line()
    (o,) = r.comparison.outputs
    assert o.mode == "agreement" and o.cosine >= 0.999   # a float16 program
    d = rep.to_dict()
    assert d["models"][0].get("numbers_compared") is not False


def test_cli_reports(models, tmp_path, capsys):
    rj, rx = tmp_path / "r.json", tmp_path / "r.xml"
    code = main(["validate", str(models["keras"]), str(models["tflite"]), str(models["int8"]),
                 "--inputs", str(models["images"]), "--report", str(rj), "--junit", str(rx)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASSED" in out and "color_int8.tflite" in out and "mode: agreement" in out
    data = json.loads(rj.read_text())
    assert data["passed"] is True and data["exit_code"] == 0
    assert [m["status"] for m in data["models"]] == ["passed", "passed"]
    assert data["models"][1]["outputs"][0]["top1_agree"] == 12
    from xml.etree import ElementTree as ET

    suite = ET.parse(rx).getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "0"


def test_save_and_load_outputs_checks_inputs(models, tmp_path, capsys):
    saved = tmp_path / "out.npz"
    assert main(["validate", str(models["keras"]), str(models["tflite"]),
                 "--save-outputs", str(saved), "--seed", "3"]) == 0
    from converters.validation.validate import load_outputs

    lo = load_outputs(str(saved))
    assert [m["file"] for m in lo.meta["models"]] == ["color.keras", "color_float.tflite"]
    assert len(lo.meta["fingerprints"]) == 10
    # the same inputs find the saved outputs; other inputs are refused
    art = Artefact.open(str(models["tflite"]))
    from converters.validation.data import fingerprint  # noqa: F401

    with pytest.raises(Exception) as e:
        lo.outputs_for(art, ["0" * 16])
    assert "other inputs" in str(e.value)


def test_validate_pair_api_used_by_convert(models):
    from converters.options import ConvertOptions
    from converters.validation.validate import validate_pair

    src = Artefact.open(str(models["keras"]))
    rep = validate_pair(src, Artefact.open(str(models["int8"])),
                        ConvertOptions(calibration=str(models["images"])))
    assert rep.passed is True
    assert rep.summary_line().startswith("valid: top-1 12/12, cosine ")
    rep = validate_pair(src, Artefact.open(str(models["tflite"])), ConvertOptions())
    assert rep.passed and rep.results[0].comparison.outputs[0].samples == 10
