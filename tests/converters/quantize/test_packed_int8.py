"""int8 that keeps a packed detector usable (converters/quantize/packed_outputs.py).

A YOLOv8-style output `[1, 4 + C, N]` packs boxes in pixels beside scores in 0..1; one int8
scale for both leaves the scores two or three levels. The int8 route divides the wide part
before the concatenation, records it in the sidecar (`output_rescale`), and every runner
multiplies it back. The detector (tests/tiny_detector.py) is calibrated on images/ and judged
with the detection judge (converters/validation/detection.py) on photos of images/holdout/
that calibration never saw.
"""

import json
import os

import numpy as np
import pytest

from converters import pipeline
from converters.options import ConvertOptions
from converters.quantize.packed_outputs import output_parts
from edge.sidecar import schema_problem
from edge.tensors import undo_output_rescale
from tests import tiny_detector
from tests.conftest import REPO

IMAGES = os.path.join(REPO, "images")
HOLDOUT = os.path.join(REPO, "images", "holdout")
SPEC = {"mean": [0], "std": [255]}


# -- the record: generated shapes, axes and factors ----------------------------------------
@pytest.mark.parametrize("seed", range(12))
def test_output_parts_finds_the_divided_slices_and_undo_restores_them(seed):
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(2, 5))
    shape = [int(d) for d in rng.integers(2, 9, ndim)]
    axis = int(rng.integers(0, ndim))
    old = rng.uniform(-3, 3, shape).astype(np.float32) * np.float32(rng.choice([1, 100, 640]))
    start = int(rng.integers(0, shape[axis] - 1))
    stop = int(rng.integers(start + 1, shape[axis] + 1))
    factor = float(rng.choice([256.0, 320.0, 640.0, 1024.0, 8.0]))
    new = np.moveaxis(old.copy(), axis, 0)
    new[start:stop] /= np.float32(factor)
    new = np.moveaxis(new, 0, axis)
    found = output_parts(old, new)
    assert found is not None
    got_axis, parts = found
    record = [{"output": 0, "axis": got_axis, "parts": parts}]
    assert schema_problem({"output_rescale": record}) is None
    np.testing.assert_allclose(undo_output_rescale([new], record)[0], old, rtol=1e-5, atol=1e-4)
    if stop - start < shape[axis]:        # a whole tensor divided is explained by any axis
        assert (got_axis, parts) == (axis, [[start, stop, factor]])


def test_a_rewrite_the_factors_do_not_explain_is_dropped_and_said(monkeypatch, tmp_path):
    """normalize_packed_outputs checks what it did: when the rewritten float model's output is
    not the old one divided per slice, the model is left as it was, with a progress line."""
    from converters.quantize import packed_outputs
    from converters.quantize.calibration import load_calibration

    data = tiny_detector.build_tflite(tmp_path / "det.tflite").read_bytes()
    cal = load_calibration(IMAGES, SPEC, count=4, input_shape=[1, 256, 256, 3], layout="NHWC")
    said = []
    new, record = packed_outputs.normalize_packed_outputs(data, cal, said.append)
    assert record and new != data and not said
    monkeypatch.setattr(packed_outputs, "output_parts", lambda old, new: None)
    new, record = packed_outputs.normalize_packed_outputs(data, cal, said.append)
    assert new == data and record == []
    assert said and "left as it is" in said[0]


def test_output_parts_refuses_a_change_no_slice_explains():
    old = np.arange(1, 25, dtype=np.float32).reshape(4, 6)
    new = old.copy()
    new[1, 2] /= 7.0                      # one element, not a slice along an axis
    assert output_parts(old, new) is None


@pytest.mark.parametrize("bad", ["x", [1], [{"output": -1, "axis": 0, "parts": []}],
                                 [{"output": 0, "axis": 0, "parts": [[2, 1, 4.0]]}],
                                 [{"output": 0, "axis": 0, "parts": [[0, 4, 0]]}],
                                 [{"output": 0, "axis": True, "parts": []}]])
def test_a_damaged_output_rescale_record_is_not_read(bad):
    assert schema_problem({"output_rescale": bad})


# -- the route on the detector -----------------------------------------------------------
def _judge(artefact, reference, holdout):
    """Pooled detection match of `artefact` against `reference` (float TFLite or ONNX) on
    the held-out photos; also the number of distinct score values the artefact gives."""
    from converters.validation import detection as D
    from converters.validation.runners.tflite import TFLiteRunner
    from edge.sidecar import read_sidecar
    from edge.tensors import quantize

    art = TFLiteRunner(str(artefact), read_sidecar(str(artefact))).activate()
    meta = art.input_metadata()[0]
    if str(reference).endswith(".onnx"):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
        ref = lambda x: sess.run(None, {"images": x.transpose(0, 3, 1, 2)})[0]   # noqa: E731
    else:
        float_runner = TFLiteRunner(str(reference)).activate()
        fmeta = float_runner.input_metadata()[0]
        ref = lambda x: next(iter(float_runner.infer({fmeta.name: x}).values()))   # noqa: E731
    src, got, levels = [], [], set()
    for x in holdout.tensors:
        q = quantize(x, meta.scale, meta.zero_point, meta.dtype) if meta.scale else x
        y = next(iter(art.infer({meta.name: q}).values()))
        levels |= set(np.round(D.decode_packed(y)[1].ravel(), 5))
        src.append(D.detect(*D.decode_packed(ref(x))))
        got.append(D.detect(*D.decode_packed(y)))
    art.deactivate()
    return D.match_runs(src, got), len(levels)


@pytest.fixture(scope="module")
def holdout():
    from converters.quantize.calibration import load_calibration

    return load_calibration(HOLDOUT, SPEC, count=16, input_shape=[1, 256, 256, 3], layout="NHWC")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """The detector as a float TFLite, and its int8 by the plain and the improved route."""
    d = tmp_path_factory.mktemp("detector")
    src = tiny_detector.build_tflite(d / "det.tflite")
    made = {}
    for name, normalize in (("plain", False), ("normalized", True)):
        opts = ConvertOptions(preprocessing=SPEC, calibration=IMAGES,
                              normalize_packed_outputs=normalize)
        r = pipeline.convert_model(src, ["tflite-int8"], opts, outdir=d / name, progress=lambda s: None)
        made[name] = (d / name / "det_int8.tflite", r)
    return src, made


def test_plain_int8_of_a_packed_detector_collapses_its_scores(quantized, holdout):
    """Without the rewrite the one output scale is ~1 (boxes up to 256 px): scores are 0 or 1,
    and the detections are lost."""
    src, made = quantized
    path, _ = made["plain"]
    side = json.loads(open(str(path) + ".edgeport.json").read())
    assert not side.get("output_rescale")
    m, levels = _judge(path, src, holdout)
    assert levels <= 3, levels
    assert m["recall"] < 0.6 or m["precision"] < 0.6, m


def test_normalized_int8_keeps_the_detections_on_photos_it_was_not_calibrated_on(quantized, holdout):
    src, made = quantized
    path, result = made["normalized"]
    m, levels = _judge(path, src, holdout)
    assert levels > 30, levels
    assert m["sources"] >= 50
    assert m["recall"] >= 0.9 and m["precision"] >= 0.9, {k: v for k, v in m.items() if k != "matched"}
    assert m["box_err"] < 2.0                 # pixels of a 256-pixel input
    side = json.loads(open(str(path) + ".edgeport.json").read())
    record = side["output_rescale"]
    assert [(r["output"], r["axis"], r["parts"]) for r in record] == [(0, 1, [[0, 4, 256.0]])]
    assert side["conversion"]["route"].startswith("float TFLite")
    assert result.hops[-1]["validation"]["passed"] is True


def _validate(source, artefact):
    """(exit code, text) of `edgeport validate SOURCE ARTEFACT` on the held-out photos."""
    import contextlib
    import io

    from edgeport.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(["validate", str(source), str(artefact), "--inputs", HOLDOUT, "--samples", "16",
                         "--mean", "0", "--std", "255"])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue()


def test_validation_fails_the_plain_int8_naming_the_score_part_and_passes_the_normalized(quantized):
    """The role judge (converters/validation/roles.py) on photos calibration never saw."""
    src, made = quantized
    assert made["plain"][1].hops[-1]["validation"]["passed"] is False
    code, text = _validate(src, made["plain"][0])
    assert code == 1 and "score part" in text and "collapsed" in text, text[-600:]
    code, text = _validate(src, made["normalized"][0])
    assert code == 0 and "recall" in text, text[-600:]


def test_an_output_that_packs_nothing_is_left_alone(tmp_path):
    """The colour classifier's one softmax output: no rewrite, no record."""
    from converters.quantize.calibration import load_calibration
    from converters.quantize.packed_outputs import normalize_packed_outputs
    from tests.conftest import DATA

    data = (DATA / "color_float.tflite").read_bytes()
    cal = load_calibration(IMAGES, {"mean": [128], "std": [128]}, count=4, input_shape=[1, 16, 16, 3],
                           layout="NHWC")
    new, record = normalize_packed_outputs(data, cal)
    assert new == data and record == []


# -- end to end from ONNX (onnx2tf: slow) -------------------------------------------------
@pytest.mark.slow
def test_onnx_yolo_style_detector_to_int8_passes_on_held_out_photos(tmp_path, holdout):
    onnx_path = tiny_detector.build(tmp_path / "det.onnx")
    opts = ConvertOptions(preprocessing=SPEC, calibration=IMAGES)
    r = pipeline.convert_model(onnx_path, ["tflite-int8"], opts, outdir=tmp_path / "out",
                               progress=lambda s: None)
    assert all(h["validation"]["passed"] is True for h in r.hops)
    path = tmp_path / "out" / "det_int8.tflite"
    side = json.loads(open(str(path) + ".edgeport.json").read())
    assert side["output_rescale"][0]["parts"] == [[0, 4, 256.0]]
    m, levels = _judge(path, onnx_path, holdout)
    assert levels > 30 and m["recall"] >= 0.9 and m["precision"] >= 0.9, m


# -- generated packed heads: layouts, decodes and factors --------------------------------
def _packed_head(path, layout, decode, side):
    """A float TFLite: (1, side, side, 3) image -> 2 x 2 conv cells -> boxes in pixels beside
    sigmoid scores, packed as [1, 4 + C, N] ("channels") or [1, N, 4 + C] ("anchors").
    `decode`: "scale" (sigmoid x side), "grid" ((sigmoid + cell) x stride, the YOLO decode),
    "product" (a MUL of two tensors, which nothing folds into: the division is inserted before
    the concatenation)."""
    import tensorflow as tf

    cells, classes = 4, 3
    rng = np.random.default_rng(7)
    k = tf.constant(rng.normal(0, 0.05, (side // 2, side // 2, 3, 8)).astype(np.float32))
    w_box = tf.constant(rng.normal(0, 1.0, (8, 4)).astype(np.float32))
    w_cls = tf.constant(rng.normal(0, 3.0, (8, classes)).astype(np.float32))
    grid = tf.constant(np.array([[0, 0, 1, 1], [0, 1, 0, 1]], np.float32)[None])

    @tf.function(input_signature=[tf.TensorSpec([1, side, side, 3], tf.float32)])
    def head(x):
        f = tf.reshape(tf.nn.conv2d(x - 0.5, k, side // 2, "VALID"), [1, cells, 8])
        raw = tf.transpose(tf.sigmoid(f @ w_box), [0, 2, 1])                  # (1, 4, N)
        if decode == "scale":
            boxes = raw * float(side)
        elif decode == "grid":
            boxes = tf.concat([(raw[:, :2] + grid) * float(side // 2), raw[:, 2:] * float(side)], 1)
        else:
            boxes = (raw * float(side)) * raw
        scores = tf.transpose(tf.sigmoid(f @ w_cls), [0, 2, 1])               # (1, C, N)
        out = tf.concat([boxes, scores], 1)
        return out if layout == "channels" else tf.transpose(out, [0, 2, 1])

    conv = tf.lite.TFLiteConverter.from_concrete_functions([head.get_concrete_function()], head)
    path.write_bytes(conv.convert())
    return path


@pytest.mark.parametrize("layout,decode,side", [("channels", "scale", 64), ("anchors", "grid", 64),
                                                ("channels", "grid", 64), ("anchors", "product", 48)])
def test_generated_packed_heads_keep_their_scores(tmp_path, layout, decode, side, monkeypatch):
    import edge.preprocess
    from converters.quantize.calibration import load_calibration

    # the photos decoded in full, as when the thresholds below were measured (the rewrite is
    # under test here, not JPEG draft decoding, which shifts these tiny heads' calibration)
    monkeypatch.setattr(edge.preprocess, "_exact_decode", True)
    from converters.quantize.packed_outputs import normalize_packed_outputs
    from converters.quantize.tflite_int8 import _interpreter, quantize_tflite
    from converters.validation.runners.base import dequantize
    from edge.tensors import quantize

    data = _packed_head(tmp_path / "head.tflite", layout, decode, side).read_bytes()
    cal = load_calibration(IMAGES, SPEC, count=12, input_shape=[1, side, side, 3], layout="NHWC")
    new, record = normalize_packed_outputs(data, cal)
    axis = 1 if layout == "channels" else 2
    assert [(r["axis"], [p[:2] for p in r["parts"]]) for r in record] == [(axis, [[0, 4]])], record
    ref = _interpreter(data)
    ref.allocate_tensors()
    holdout = load_calibration(HOLDOUT, SPEC, count=8, input_shape=[1, side, side, 3], layout="NHWC").tensors

    def errors(model_bytes, record):
        """(max score error, max box error, distinct score values) of its int8 on `holdout`."""
        it = _interpreter(quantize_tflite(model_bytes, cal, "uint8", lambda s: None))
        it.allocate_tensors()
        levels, err, box_err = set(), 0.0, 0.0
        for x in holdout:
            ref.set_tensor(ref.get_input_details()[0]["index"], x)
            ref.invoke()
            want = np.moveaxis(ref.get_tensor(ref.get_output_details()[0]["index"]), axis, 0)
            d = it.get_input_details()[0]
            it.set_tensor(d["index"], quantize(x, *d["quantization"], d["dtype"]))
            it.invoke()
            o = it.get_output_details()[0]
            got = undo_output_rescale([dequantize(it.get_tensor(o["index"]), *o["quantization"])], record)[0]
            got = np.moveaxis(got, axis, 0)
            levels |= set(np.round(got[4:].ravel(), 5))
            err = max(err, float(np.abs(want[4:] - got[4:]).max()))
            box_err = max(box_err, float(np.abs(want[:4] - got[:4]).max()))
        return err, box_err, len(levels)

    err, box_err, levels = errors(new, record)
    plain_err, plain_box_err, plain_levels = errors(data, [])
    assert plain_levels <= 8 and plain_err > 0.05      # what the rewrite is for
    assert err < 0.05, err                    # scores within a few int8 steps of 1/255
    assert levels > 8, levels
    # boxes as good as plain int8 gives them (the head's own int8 error), or a few pixels
    assert box_err <= max(0.03 * side, 1.05 * plain_box_err), (box_err, plain_box_err)


# -- every int8 route: Keras through the TFLite converter ----------------------------------
def test_keras_packed_detector_to_int8_is_normalized_and_passes(tmp_path, capsys):
    """The Keras / SavedModel route quantizes with the TFLite converter; a packed output goes
    through the same rewrite first, and its validation passes where it failed before."""
    import keras

    from tests.conftest import run_cli

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 4, strides=4, activation="relu")(inp)
    boxes = keras.layers.Rescaling(32.0)(keras.layers.Conv2D(4, 1, activation="sigmoid")(x))
    scores = keras.layers.Conv2D(3, 1, activation="sigmoid")(x)
    out = keras.layers.Concatenate(axis=-1)([keras.layers.Reshape((64, 4))(boxes),
                                             keras.layers.Reshape((64, 3))(scores)])
    out = keras.layers.Permute((2, 1), name="output0")(out)
    src = tmp_path / "det.keras"
    keras.Model(inp, out).save(str(src))
    code, out, err = run_cli(capsys, "convert", src, "--to", "tflite-int8", "--calibration", IMAGES,
                             "--mean", "0", "--std", "255", "-o", tmp_path / "out", "--json")
    doc = json.loads(out)
    [a] = [x for x in doc["models"][0]["artefacts"] if x["format"] == "tflite-int8"]
    assert code == 0 and a["validation"]["passed"] is True, (a["validation"], err[-400:])
    side = json.loads(open(a["model"] + ".edgeport.json").read())
    assert side["output_rescale"][0]["parts"] == [[0, 4, 32.0]], side["output_rescale"]
