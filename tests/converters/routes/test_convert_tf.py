"""Every TF-side registry edge on a tiny Keras classifier, each artefact checked against its source."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from converters import formats, metadata
from converters.options import ConvertOptions
from converters.pipeline import convert_model
from edge.errors import EdgeportError, InputError
from edge.tflite_model import TFLiteModel
from tests.tiny_tf import CLASSES, LABELS, SIZE, build_classifier, image_batch, make_images, run_onnx, run_tflite

SHARED = Path(__file__).resolve().parents[4] / "shared"
CORAL = SHARED / "fixtures" / "coral"

PRE = {"mean": [0.0], "std": [255.0]}


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert_tf")
    model = build_classifier(root / "tiny.keras")
    model.export(os.fspath(root / "tiny_sm"), verbose=False)
    cal = make_images(root / "cal", n=12)
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    x = image_batch(cal)
    return {"root": root, "keras": root / "tiny.keras", "sm": root / "tiny_sm", "cal": cal,
            "labels": root / "labels.txt", "x": x, "ref": model.predict(x, verbose=0)}


def _opts(work, **kw):
    base = dict(quiet=True, preprocessing=dict(PRE), calibration=os.fspath(work["cal"]),
                labels=os.fspath(work["labels"]), author="edgeport tests", license="Apache-2.0",
                description="tiny color classifier", version="1.2")
    base.update(kw)
    return ConvertOptions(**base)


@pytest.fixture(scope="session")
def from_keras(work):
    out = work["root"] / "from_keras"
    src_sha = _sha(work["keras"])
    r = convert_model(work["keras"], "onnx,ort,tflite,tflite-int8,coreml", _opts(work), outdir=out,
                      validate=False)
    assert _sha(work["keras"]) == src_sha, "the source must never be touched"
    return out, {h["format"]: h for h in r.hops}, r


@pytest.fixture(scope="session")
def from_savedmodel(work):
    out = work["root"] / "from_sm"
    r = convert_model(work["sm"], "onnx,tflite,tflite-int8,coreml", _opts(work, io_dtype="int8"),
                      outdir=out, validate=False)
    return out, {h["format"]: h for h in r.hops}, r


def _sha(path):
    from converters.artefact import sha256_of

    return sha256_of(path)


def _sidecar(path):
    return json.loads(Path(str(path) + ".edgeport.json").read_text())


def _report(name, hop, diff):
    print(f"EDGE {name}: {hop['seconds']:.2f} s, {hop['size']} bytes, max abs diff {diff:.3g}")


# -- keras -> ... ---------------------------------------------------------------------------
def test_keras_to_onnx(work, from_keras):
    out, hops, r = from_keras
    path = out / "tiny.onnx"
    assert r.routes["onnx"] == ["keras", "onnx"]
    assert formats.detect_format(path) == formats.ONNX
    y = run_onnx(path, work["x"])
    diff = float(np.abs(y - work["ref"]).max())
    _report("keras -> onnx", hops["onnx"], diff)
    assert diff < 1e-5
    side = _sidecar(path)
    assert side["source"]["sha256"] == _sha(work["keras"])
    assert side["route"] == ["keras", "onnx"] and side["opset"] == 17
    assert side["labels"] == LABELS and side["preprocessing"]["std"] == [255.0]
    assert "tf2onnx" in side["versions"]
    embedded = metadata.read(path)
    assert embedded["source"]["sha256"] == side["source"]["sha256"]


def test_onnx_to_ort(work, from_keras):
    out, hops, r = from_keras
    path = out / "tiny.ort"
    assert r.routes["ort"] == ["keras", "onnx", "ort"]
    assert formats.detect_format(path) == formats.ORT
    y = run_onnx(path, work["x"])
    diff = float(np.abs(y - work["ref"]).max())
    _report("onnx -> ort", hops["ort"], diff)
    assert diff < 1e-5
    config = (out / "tiny.required_operators.config").read_text()
    assert "Softmax" in config or "softmax" in config.lower()
    assert metadata.read(path)["route"] == ["keras", "onnx", "ort"]
    assert not [p for p in os.listdir(out) if p.startswith(".")], "temp files left behind"


def test_keras_to_tflite_float(work, from_keras):
    out, hops, _ = from_keras
    path = out / "tiny_float.tflite"
    assert formats.detect_format(path) == formats.TFLITE
    y, inp, _ = run_tflite(path, work["x"])
    assert inp["dtype"] == np.float32
    diff = float(np.abs(y - work["ref"]).max())
    _report("keras -> tflite", hops["tflite"], diff)
    assert diff < 1e-5
    assert metadata.read(path)["format"] == "tflite"


def test_keras_to_tflite_int8(work, from_keras):
    out, hops, _ = from_keras
    path = out / "tiny_int8.tflite"
    assert formats.detect_format(path) == formats.TFLITE_INT8
    m = TFLiteModel.load(path)
    assert m.inputs()[0].dtype == "UINT8" and m.outputs()[0].dtype == "UINT8"
    assert "edgeport_provenance" in m.metadata
    y, _, _ = run_tflite(path, work["x"])
    diff = float(np.abs(y - work["ref"]).max())
    _report("keras -> tflite-int8", hops["tflite-int8"], diff)
    agree = np.mean(y.argmax(1) == work["ref"].argmax(1))
    assert agree >= 0.9, f"int8 top-1 agrees on only {agree:.0%} of the calibration images"
    assert diff < 0.1
    side = _sidecar(path)
    assert side["calibration"]["count"] == 12
    assert side["calibration"]["source"] == os.path.abspath(work["cal"])
    assert side["conversion"]["io_dtype"] == "uint8"
    assert side["preprocessing"]["size"] == [SIZE, SIZE]


def test_keras_to_coreml_structure(work, from_keras):
    ct = pytest.importorskip("coremltools")
    out, hops, _ = from_keras
    path = out / "tiny.mlpackage"
    assert path.is_dir() and formats.detect_format(path) == formats.COREML
    _report("keras -> coreml", hops["coreml"], float("nan"))
    spec = ct.utils.load_spec(os.fspath(path))
    assert spec.WhichOneof("Type") == "mlProgram"
    inp = spec.description.input[0]
    assert inp.type.WhichOneof("Type") == "imageType"
    assert (inp.type.imageType.width, inp.type.imageType.height) == (SIZE, SIZE)
    assert list(spec.description.output)  # a classifier: class label + probabilities
    assert spec.description.predictedFeatureName
    meta = spec.description.metadata
    assert meta.author == "edgeport tests" and meta.license == "Apache-2.0"
    assert meta.shortDescription == "tiny color classifier" and meta.versionString == "1.2"
    prov = json.loads(meta.userDefined["edgeport_provenance"])
    assert prov["route"] == ["keras", "coreml"] and prov["labels"] == LABELS
    # the scale/bias of the image input come from the preprocessing spec (1/255, 0)
    text = str(spec.mlProgram)
    assert "0.00392156" in text, "image scale 1/255 not found in the program"


# -- savedmodel -> ... ----------------------------------------------------------------------
def test_savedmodel_to_onnx_and_tflite(work, from_savedmodel):
    out, hops, r = from_savedmodel
    assert r.format == formats.SAVEDMODEL
    y = run_onnx(out / "tiny_sm.onnx", work["x"])
    diff = float(np.abs(y - work["ref"]).max())
    _report("savedmodel -> onnx", hops["onnx"], diff)
    assert diff < 1e-5
    y, _, _ = run_tflite(out / "tiny_sm_float.tflite", work["x"])
    diff = float(np.abs(y - work["ref"]).max())
    _report("savedmodel -> tflite", hops["tflite"], diff)
    assert diff < 1e-5


def test_savedmodel_to_tflite_int8_io_int8(work, from_savedmodel):
    out, hops, _ = from_savedmodel
    path = out / "tiny_sm_int8.tflite"
    assert formats.detect_format(path) == formats.TFLITE_INT8
    m = TFLiteModel.load(path)
    assert m.inputs()[0].dtype == "INT8" and m.outputs()[0].dtype == "INT8"
    y, _, _ = run_tflite(path, work["x"])
    diff = float(np.abs(y - work["ref"]).max())
    _report("savedmodel -> tflite-int8", hops["tflite-int8"], diff)
    assert np.mean(y.argmax(1) == work["ref"].argmax(1)) >= 0.9


def test_savedmodel_to_coreml(work, from_savedmodel):
    ct = pytest.importorskip("coremltools")
    out, hops, _ = from_savedmodel
    _report("savedmodel -> coreml", hops["coreml"], float("nan"))
    spec = ct.utils.load_spec(os.fspath(out / "tiny_sm.mlpackage"))
    assert spec.WhichOneof("Type") == "mlProgram"
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"


# -- tflite -> onnx -------------------------------------------------------------------------
def test_tflite_float_to_onnx(work, from_keras, tmp_path):
    out, _, _ = from_keras
    src = tmp_path / "f.tflite"
    shutil.copy(out / "tiny_float.tflite", src)
    r = convert_model(src, "onnx", _opts(work), validate=False)
    y = run_onnx(tmp_path / "f.onnx", work["x"])
    diff = float(np.abs(y - work["ref"]).max())
    _report("tflite -> onnx", r.hops[0], diff)
    assert diff < 1e-5


def test_tflite_int8_to_onnx(work, from_keras, tmp_path):
    out, _, _ = from_keras
    src = tmp_path / "q.tflite"
    shutil.copy(out / "tiny_int8.tflite", src)
    r = convert_model(src, "onnx", _opts(work), validate=False)
    assert r.routes["onnx"] == ["tflite-int8", "onnx"]
    ref, inp, outd = run_tflite(src, work["x"])
    import onnxruntime as ort

    sess = ort.InferenceSession(os.fspath(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    scale, zp = inp["quantization"]
    oscale, ozp = outd["quantization"]
    ys = []
    for s in work["x"]:
        q = np.clip(np.rint(s[None] / scale + zp), 0, 255).astype(np.uint8)
        ys.append(oscale * (sess.run(None, {sess.get_inputs()[0].name: q})[0].astype(np.int64) - ozp))
    y = np.concatenate(ys)
    diff = float(np.abs(y - ref).max())
    _report("tflite-int8 -> onnx", r.hops[0], diff)
    assert diff <= 2 * oscale + 1e-6, "ONNX of an int8 model must match it within 2 quantization steps"


# -- ONNX -> Core ML ------------------------------------------------------------------------
def test_onnx_to_coreml_works_or_names_what_to_install(work, from_keras, tmp_path):
    out, _, _ = from_keras
    src = tmp_path / "m.onnx"
    shutil.copy(out / "tiny.onnx", src)
    try:
        import onnx2coreml  # noqa: F401
        available = True
    except Exception:
        available = False
    if available:
        convert_model(src, "coreml", _opts(work, preprocessing=None, labels=None), validate=False)
        assert formats.detect_format(tmp_path / "m.mlpackage") == formats.COREML
    else:
        with pytest.raises(EdgeportError) as e:
            convert_model(src, "coreml", _opts(work), validate=False)
        assert "onnx2coreml" in str(e.value) and "pip install" in str(e.value)
        assert not (tmp_path / "m.mlpackage").exists()
        assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


# -- calibration rules ----------------------------------------------------------------------
def test_int8_without_calibration_fails_clearly(work, tmp_path):
    with pytest.raises(InputError) as e:
        convert_model(work["keras"], "tflite-int8", _opts(work, calibration=None), outdir=tmp_path)
    assert "--calibration" in str(e.value) and "random" in str(e.value)
    assert os.listdir(tmp_path) == []


def test_int8_with_empty_calibration_folder_fails(work, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(InputError) as e:
        convert_model(work["keras"], "tflite-int8", _opts(work, calibration=os.fspath(empty)),
                      outdir=tmp_path / "out")
    assert "no images" in str(e.value)
    assert not (tmp_path / "out" / "tiny_int8.tflite").exists()


def test_int8_calibrated_on_coral_photos(work, tmp_path):
    photos = sorted(CORAL.glob("*.bmp")) if CORAL.is_dir() else []
    if not photos:
        pytest.skip(f"Coral photos not found in {CORAL}")
    cal = tmp_path / "photos"
    cal.mkdir()
    for p in photos:
        shutil.copy(p, cal / p.name)
    r = convert_model(work["keras"], "tflite-int8", _opts(work, calibration=os.fspath(cal)),
                      outdir=tmp_path, validate=False)
    path = tmp_path / "tiny_int8.tflite"
    assert formats.detect_format(path) == formats.TFLITE_INT8
    x = image_batch(cal)
    y, _, _ = run_tflite(path, x)
    import keras

    ref = keras.models.load_model(work["keras"]).predict(x, verbose=0)
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.1   # photos with a clear winner must keep it
    assert (y.argmax(1) == ref.argmax(1))[clear].all(), "int8 top-1 differs from Keras on a Coral photo"
    assert float(np.abs(y - ref).max()) < 0.1
    assert _sidecar(path)["calibration"]["count"] == len(photos)
    assert r.hops[0]["status"] == "converted"


def test_tiny_model_separates_its_classes(work):
    assert sorted(set(work["ref"].argmax(1))) == list(range(CLASSES)), "tiny model too weak for top-1 checks"


def test_coreml_classifier_labels_are_read_and_validated(work, from_keras):
    ct = pytest.importorskip("coremltools")
    from converters.artefact import Artefact
    from converters.validation.runners.coreml import class_labels_of
    from converters.validation.validate import validate_pair

    out, _, _ = from_keras
    spec = ct.utils.load_spec(os.fspath(out / "tiny.mlpackage"))
    assert class_labels_of(spec) == LABELS
    report = validate_pair(Artefact.open(work["keras"]), Artefact.open(out / "tiny.mlpackage"), _opts(work))
    (r,) = report.results
    if r.structure:   # on macOS without a runtime, or a program the executor cannot run
        checks = {c: ok for c, ok, _ in r.structure}
        assert checks["classifier labels"] and all(checks.values()), r.structure
    else:             # numbers (Core ML, or its reference executor); labels checked too
        assert r.comparison.outputs and r.comparison.passed, r.summary_line()
    assert report.passed
