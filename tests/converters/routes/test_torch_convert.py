"""PyTorch sources -> ONNX, TFLite float, TFLite full-int8, Core ML, on a tiny CNN built here.

Every artefact is run and compared with the PyTorch model it came from, except Core ML,
which has no runtime off macOS: there the package's structure (image input, classifier
labels, metadata) is checked instead.
"""

import collections
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")

from converters import formats
from converters.artefact import Artefact  # noqa: E402
from converters.options import ConvertOptions  # noqa: E402
from converters.registry import load_registry, plan_route  # noqa: E402
from converters.routes import torch as from_torch  # noqa: E402
from edge.errors import InputError  # noqa: E402
from edge.tflite_model import TFLiteModel  # noqa: E402
from tests.tiny_torch import SOURCE  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
IMAGES = REPO / "images"
SHAPE = (1, 3, 32, 32)
SPEC = {"mean": [127.5], "std": [127.5]}



@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A folder with tinynet.py, its state dict, a TorchScript trace and a .pt2 program."""
    d = tmp_path_factory.mktemp("tiny_torch")
    (d / "tinynet.py").write_text(SOURCE)
    from converters.routes.torch_loading import import_factory

    torch.manual_seed(0)
    model = import_factory(f"{d / 'tinynet.py'}:build")().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        model.b1.running_mean.uniform_(-0.5, 0.5)
        model.b1.running_var.uniform_(0.5, 2.0)
        model.b1.weight.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), d / "weights.pt")
    x = torch.rand(SHAPE) * 2 - 1
    torch.jit.save(torch.jit.trace(model, x), d / "tiny.torchscript.pt")
    torch.export.save(torch.export.export(model, (x,)), d / "tiny.pt2")
    return {"dir": d, "model": model, "factory": f"{d / 'tinynet.py'}:build"}


def sources(tiny):
    d = tiny["dir"]
    return {
        formats.TORCH_MODULE: (Artefact(str(d / "weights.pt"), formats.TORCH_MODULE, {}),
                               dict(torch_model=tiny["factory"])),
        formats.TORCHSCRIPT: (Artefact(str(d / "tiny.torchscript.pt"), formats.TORCHSCRIPT, {}),
                              dict(trust_pickle=True)),
        formats.TORCH_EXPORT: (Artefact(str(d / "tiny.pt2"), formats.TORCH_EXPORT, {}),
                               dict(trust_pickle=True)),
    }


def options(**kw):
    base = dict(input_shape=SHAPE, preprocessing=dict(SPEC), quiet=True)
    base.update(kw)
    return ConvertOptions(**base)


def images(n=6, seed=1):
    """Real photos through the test spec, NCHW float32 (the PyTorch model's input)."""
    from converters.quantize.calibration import load_calibration

    if not IMAGES.is_dir():
        pytest.skip(f"{IMAGES} (the bundled photos) is missing")
    cal = load_calibration(str(IMAGES), dict(SPEC, layout="NCHW", size=[32, 32]), count=n)
    return list(cal.arrays())


def torch_out(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def run_tflite(path, x_nhwc):
    from ai_edge_litert.interpreter import Interpreter

    from edge.tensors import invoke_float

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    (y,) = invoke_float(it, x_nhwc)
    return y, it.get_input_details()[0], it.get_output_details()[0]


# ------------------------------------------------------------------------- registry

def test_every_torch_source_reaches_every_target_directly():
    reg = load_registry()
    for src in formats.TORCH_FORMATS:
        for dst in (formats.ONNX, formats.TFLITE, formats.TFLITE_INT8, formats.COREML):
            conv = reg[(src, dst)]
            assert conv.extra == "torch"
            assert [c.name for c in plan_route(src, dst)] == [f"{src} -> {dst}"]
        assert reg[(src, formats.TFLITE_INT8)].needs == ("calibration",)


# ----------------------------------------------------------------------------- ONNX

@pytest.mark.parametrize("fmt", formats.TORCH_FORMATS)
def test_onnx_matches_torch(tiny, tmp_path, fmt):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    src, kw = sources(tiny)[fmt]
    out = tmp_path / "tiny.onnx"
    meta = from_torch.torch_to_onnx(src, str(out), options(opset=13, **kw))
    assert meta["opset"] == 13
    assert formats.detect_format(out) == formats.ONNX
    proto = onnx.load(str(out))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [13]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == list(SHAPE)  # static batch by default
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for x in images(4):
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, torch_out(tiny["model"], x), atol=1e-4, rtol=1e-4)


def test_onnx_dynamic_batch(tiny, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    src, kw = sources(tiny)[formats.TORCH_MODULE]
    out = tmp_path / "dyn.onnx"
    from_torch.torch_to_onnx(src, str(out), options(dynamic_batch=True, **kw))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.concatenate(images(3), axis=0)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, torch_out(tiny["model"], x), atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- TFLite

@pytest.mark.parametrize("fmt", formats.TORCH_FORMATS)
def test_tflite_float_matches_torch_with_nhwc_input(tiny, tmp_path, fmt):
    src, kw = sources(tiny)[fmt]
    out = tmp_path / "tiny_float.tflite"
    meta = from_torch.torch_to_tflite(src, str(out), options(**kw))
    assert formats.detect_format(out) == formats.TFLITE
    assert meta["preprocessing"]["layout"] == "NHWC"
    model = TFLiteModel.load(out)
    assert "TRANSPOSE" not in model.op_names()
    for x in images(4):
        got, i, _ = run_tflite(out, x.transpose(0, 2, 3, 1).copy())
        assert tuple(i["shape"]) == (1, 32, 32, 3)
        np.testing.assert_allclose(got, torch_out(tiny["model"], x), atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="session")
def int8_uint8(tiny, tmp_path_factory):
    if not IMAGES.is_dir():
        pytest.skip(f"{IMAGES} (calibration photos) is missing")
    src, kw = sources(tiny)[formats.TORCH_MODULE]
    out = tmp_path_factory.mktemp("int8") / "tiny_int8.tflite"
    meta = from_torch.torch_to_tflite_int8(src, str(out), options(calibration=str(IMAGES), **kw))
    return out, meta


def test_tflite_int8_is_full_integer_with_uint8_io(int8_uint8):
    out, meta = int8_uint8
    assert formats.detect_format(out) == formats.TFLITE_INT8
    model = TFLiteModel.load(out)
    ops = collections.Counter(model.op_names())
    assert "TRANSPOSE" not in ops and "DEQUANTIZE" not in ops
    assert set(ops) <= {"QUANTIZE", "PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED"}
    g = model.main
    assert g.tensors[g.inputs[0]].dtype == "UINT8" and g.tensors[g.outputs[0]].dtype == "UINT8"
    # every weight of a conv / FC is int8, per output channel
    for op in g.operators:
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = g.tensors[op.inputs[1]]
            assert w.dtype == "INT8" and len(w.quantization.scale) > 1
    assert meta["calibration"]["count"] == len([p for p in os.listdir(IMAGES) if p.endswith(".jpg")])
    assert meta["calibration"]["kind"] == "images"
    assert meta["preprocessing"]["layout"] == "NHWC" and meta["io_dtype"] == "uint8"


def test_tflite_int8_agrees_with_torch(tiny, int8_uint8):
    out, _ = int8_uint8
    errs, spans = [], []
    for x in images(8):
        got, _, o = run_tflite(out, x.transpose(0, 2, 3, 1).copy())
        ref = torch_out(tiny["model"], x)
        errs.append(np.abs(got - ref).max())
        spans.append(ref.max() - ref.min())
        assert got.argmax() == ref.argmax() or np.sort(ref[0])[-1] - ref[0, got.argmax()] < 0.1 * spans[-1]
    # int8 error well under a tenth of the output range (a broken scale would be far off)
    assert max(errs) < 0.1 * min(spans), (errs, spans)


def test_tflite_int8_io_int8_and_records_source(tiny, tmp_path):
    src, kw = sources(tiny)[formats.TORCHSCRIPT]
    out = tmp_path / "tiny_int8.tflite"
    meta = from_torch.torch_to_tflite_int8(
        src, str(out), options(calibration=str(IMAGES), calibration_count=5, io_dtype="int8", **kw))
    g = TFLiteModel.load(out).main
    assert g.tensors[g.inputs[0]].dtype == "INT8"
    assert formats.detect_format(out) == formats.TFLITE_INT8
    assert meta["calibration"]["count"] == 5
    assert meta["calibration"]["source"] == os.path.abspath(IMAGES)
    x = images(1)[0]
    got, _, _ = run_tflite(out, x.transpose(0, 2, 3, 1).copy())
    ref = torch_out(tiny["model"], x)
    assert np.abs(got - ref).max() < 0.1 * (ref.max() - ref.min())


def test_tflite_int8_never_calibrates_without_images(tiny, tmp_path):
    src, kw = sources(tiny)[formats.TORCH_MODULE]
    with pytest.raises(InputError, match="calibration"):
        from_torch.torch_to_tflite_int8(src, str(tmp_path / "a.tflite"), options(**kw))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        from_torch.torch_to_tflite_int8(src, str(tmp_path / "b.tflite"),
                                        options(calibration=str(empty), **kw))
    assert not (tmp_path / "a.tflite").exists() and not (tmp_path / "b.tflite").exists()


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_bias_correction_reduces_int8_error(tiny, tmp_path):
    src, kw = sources(tiny)[formats.TORCH_MODULE]
    errs = {}
    for flag in (True, False):
        out = tmp_path / f"bc_{flag}.tflite"
        o = options(calibration=str(IMAGES), bias_correction=flag, **kw)
        meta = from_torch.torch_to_tflite_int8(src, str(out), o)
        assert bool(meta["bias_correction"]) is flag
        errs[flag] = np.mean([np.abs(run_tflite(out, x.transpose(0, 2, 3, 1).copy())[0]
                                     - torch_out(tiny["model"], x)).mean() for x in images(8)])
    assert errs[True] <= errs[False] * 1.05, errs


# -------------------------------------------------------------------------- Core ML

def _coreml_spec(path):
    ct = pytest.importorskip("coremltools")
    return ct.models.MLModel(str(path), skip_model_load=True).get_spec()


@pytest.mark.parametrize("fmt", formats.TORCH_FORMATS)
def test_coreml_image_classifier_with_metadata(tiny, tmp_path, fmt):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class{i}" for i in range(5)) + "\n")
    src, kw = sources(tiny)[fmt]
    out = tmp_path / "tiny.mlpackage"
    o = options(labels=str(labels), author="Ada", license="MIT", description="tiny test net",
                version="1.2.3", coreml_target="iOS16", **kw)
    meta = from_torch.torch_to_coreml(src, str(out), o)
    assert formats.detect_format(out) == formats.COREML
    spec = _coreml_spec(out)
    assert spec.WhichOneof("Type") == "mlProgram"
    assert spec.specificationVersion >= 7  # iOS16 -> spec 7
    (inp,) = spec.description.input
    assert inp.type.WhichOneof("Type") == "imageType"
    assert (inp.type.imageType.width, inp.type.imageType.height) == (32, 32)
    assert meta["coreml_input"] == "image" and meta["labels"] == [f"class{i}" for i in range(5)]
    assert spec.description.predictedFeatureName  # a classifier
    md = spec.description.metadata
    assert (md.author, md.license, md.shortDescription, md.versionString) == \
        ("Ada", "MIT", "tiny test net", "1.2.3")


def test_coreml_per_channel_std_and_labels_mismatch(tiny, tmp_path):
    src, kw = sources(tiny)[formats.TORCH_MODULE]
    o = options(preprocessing={"mean": [123.7, 116.3, 103.5], "std": [58.4, 57.1, 57.4]}, **kw)
    from_torch.torch_to_coreml(src, str(tmp_path / "a.mlpackage"), o)
    (inp,) = _coreml_spec(tmp_path / "a.mlpackage").description.input
    assert inp.type.WhichOneof("Type") == "imageType"
    bad = tmp_path / "three.txt"
    bad.write_text("a\nb\nc\n")
    with pytest.raises(InputError, match="labels"):
        from_torch.torch_to_coreml(src, str(tmp_path / "b.mlpackage"), options(labels=str(bad), **kw))


# ------------------------------------------------------------ through the convert pipeline

@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_convert_pipeline_torch_module_to_onnx_and_int8(tiny, tmp_path):
    from converters import pipeline

    o = options(torch_model=tiny["factory"], calibration=str(IMAGES))
    result = pipeline.convert_model(str(tiny["dir"] / "weights.pt"), ["onnx", "tflite-int8"], o,
                                    outdir=str(tmp_path))
    made = {h["format"]: h for h in result.hops}
    assert set(made) >= {formats.ONNX, formats.TFLITE_INT8}
    int8 = Artefact.open(made[formats.TFLITE_INT8]["path"])
    assert int8.format == formats.TFLITE_INT8
    assert int8.metadata["calibration"]["count"] > 0
    assert int8.metadata["preprocessing"]["layout"] == "NHWC"
    assert made[formats.ONNX]["validation"]["passed"] is True, made[formats.ONNX]["validation"]


def test_per_channel_std_wrapper_is_exact(tiny):
    """Core ML takes one image scale: the std[0] scale plus a per-channel factor equals the spec."""
    mean, std = np.array([123.7, 116.3, 103.5]), np.array([58.4, 57.1, 57.4])
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32))
    wrapped = from_torch._ChannelScale.wrap(tiny["model"], [std[0] / s for s in std])
    as_core_ml_feeds = torch.tensor((pixels - mean[None, :, None, None]) / std[0], dtype=torch.float32)
    as_spec_says = torch.tensor((pixels - mean[None, :, None, None]) / std[None, :, None, None],
                                dtype=torch.float32)
    with torch.no_grad():
        np.testing.assert_allclose(wrapped(as_core_ml_feeds).numpy(), tiny["model"](as_spec_says).numpy(),
                                   atol=1e-5, rtol=1e-5)
