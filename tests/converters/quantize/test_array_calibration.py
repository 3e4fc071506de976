"""Full-int8 calibration from `--data` arrays: a float TFLite that takes no image
(audio-like samples, two inputs) is quantized on the user's .npz and validated on it.

The models are tiny Keras models built here and saved as float TFLite; the data is a
synthetic tone-plus-noise signal in int16 range (what the models were shaped for), never
presented as real audio. The hand run on openWakeWord's models with real speech is in
docs/benchmarks.md.
"""

import json
import os
import shutil

import numpy as np
import pytest

from converters import formats, pipeline, registry
from converters.options import ConvertOptions
from edge.errors import InputError
from tests.conftest import run_cli

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SAMPLES = 1280


def _signal(rng, n, scale=1.0):
    """`n` clips of tones and noise with amplitudes in int16 range, shape (n, 1, SAMPLES)."""
    t = np.arange(SAMPLES) / 16000.0
    out = []
    for _ in range(n):
        f = rng.uniform(100, 3000, 3)
        a = rng.uniform(500, 8000, 3)
        x = sum(ai * np.sin(2 * np.pi * fi * t + rng.uniform(0, 6)) for ai, fi in zip(a, f))
        out.append(x + rng.normal(0, 300, SAMPLES))
    return (np.stack(out)[:, None, :] * scale).astype(np.float32)


def _tflite(model):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _input_names(path):
    from edge.tflite_model import TFLiteModel

    return [t.name for t in TFLiteModel.load(path).inputs()]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An audio-like model (1, 1280) and a two-input model, with realistic .npz data."""
    import tensorflow as tf

    out = tmp_path_factory.mktemp("arrays")
    tf.keras.utils.set_random_seed(0)
    audio = tf.keras.Input((SAMPLES,), batch_size=1, name="audio")
    x = tf.keras.layers.Rescaling(1 / 32768.0)(audio)
    x = tf.keras.layers.Reshape((80, 16))(x)
    x = tf.keras.layers.Conv1D(8, 5, strides=2, activation="relu")(x)
    x = tf.keras.layers.Conv1D(8, 3, activation="relu")(x)
    x = tf.keras.layers.GlobalAveragePooling1D()(x)
    y = tf.keras.layers.Dense(4, name="scores")(x)
    (out / "audio.tflite").write_bytes(_tflite(tf.keras.Model(audio, y)))

    a = tf.keras.Input((64,), batch_size=1, name="frames")
    b = tf.keras.Input((6,), batch_size=1, name="context")
    h = tf.keras.layers.Add()([tf.keras.layers.Dense(16)(a), tf.keras.layers.Dense(16)(b)])
    h = tf.keras.layers.ReLU()(h)
    z = tf.keras.layers.Dense(3, name="out")(h)
    (out / "two.tflite").write_bytes(_tflite(tf.keras.Model([a, b], z)))

    o = tf.keras.Input((None, 4), name="frames")      # open batch and length: signature [-1, -1, 4]
    k = tf.keras.layers.Conv1D(8, 3, activation="relu")(o)
    k = tf.keras.layers.GlobalMaxPooling1D()(k)
    (out / "open.tflite").write_bytes(_tflite(tf.keras.Model(o, tf.keras.layers.Dense(2)(k))))

    rng = np.random.default_rng(0)
    np.savez(out / "open.npz", **{_input_names(out / "open.tflite")[0]:
                                  rng.normal(0, 1, (12, 1, 32, 4)).astype(np.float32)})
    name = _input_names(out / "audio.tflite")[0]
    np.savez(out / "audio.npz", **{name: _signal(rng, 24)})
    np.savez(out / "audio_x1000.npz", **{name: _signal(np.random.default_rng(0), 24, 1000.0)})
    names = _input_names(out / "two.tflite")
    frames = next(n for n in names if "frames" in n)
    context = next(n for n in names if "context" in n)
    np.savez(out / "two.npz", **{frames: rng.normal(0, 2, (16, 1, 64)).astype(np.float32),
                                 context: rng.uniform(-1, 1, (16, 1, 6)).astype(np.float32)})
    return out, name, frames, context


@pytest.fixture(scope="module")
def audio_int8(models, tmp_path_factory):
    out, *_ = models
    dst = tmp_path_factory.mktemp("audio_int8")
    opts = ConvertOptions(calibration_data=str(out / "audio.npz"), quiet=True)
    return dst, pipeline.convert_model(out / "audio.tflite", ["tflite-int8"], opts, outdir=dst)


def test_planner_and_needs_accept_data_instead_of_images(tmp_path):
    routes = {"edgetpu": registry.plan_route("tflite", "edgetpu")}
    assert [c.name for c in registry.plan_route("tflite", "edgetpu")] == [
        "tflite -> tflite-int8", "tflite-int8 -> edgetpu"]
    assert [c.target for c in registry.plan_route("onnx", "tflite-int8")] == ["tflite", "tflite-int8"]
    pipeline.check_needs(routes, ConvertOptions(calibration_data=str(tmp_path / "c.npz")))
    pipeline.check_needs(routes, ConvertOptions(calibration=str(tmp_path)))
    with pytest.raises(InputError) as e:
        pipeline.check_needs(routes, ConvertOptions())
    assert "--calibration DIR" in str(e.value) and "--data FILE.npz" in str(e.value)
    # Keras and PyTorch quantize through their own converters, on images only
    keras = {"tflite-int8": registry.plan_route("keras", "tflite-int8")}
    with pytest.raises(InputError, match="needs --calibration DIR") as e:
        pipeline.check_needs(keras, ConvertOptions(calibration_data=str(tmp_path / "c.npz")))
    assert "--data" not in str(e.value)


def test_audio_like_model_quantizes_on_arrays_and_validates(audio_int8, models):
    dst, r = audio_int8
    out, name, *_ = models
    hop = r.hops[0]
    v = hop["validation"]
    assert v["passed"] is True, v
    assert v["inputs"] == "24 samples from audio.npz" and "cosine" in v["summary"]
    path = dst / "audio_int8.tflite"
    assert formats.detect_format(path) == formats.TFLITE_INT8
    side = json.loads((dst / "audio_int8.tflite.edgeport.json").read_text())
    cal = side["calibration"]
    assert cal["kind"] == "arrays" and cal["file"] == "audio.npz" and cal["count"] == 24
    import hashlib

    assert cal["sha256"] == hashlib.sha256((out / "audio.npz").read_bytes()).hexdigest()
    assert cal["inputs"] == {name: {"shape": [1, SAMPLES], "dtype": "float32"}}
    conv = side["conversion"]
    assert conv["input_shape"] == [1, SAMPLES] and conv["bias_correction"]["samples"] == 24
    assert side["options"]["calibration_data"] == str(out / "audio.npz")


def test_calibration_on_the_wrong_scale_fails_validation_on_real_scale_data(audio_int8, models, tmp_path,
                                                                             capsys):
    """The check can fail: a model calibrated on data 1000x too loud is refused by validation on
    data at the real scale, while the faithful one passes the same check."""
    dst, _ = audio_int8
    out, *_ = models
    opts = ConvertOptions(calibration_data=str(out / "audio_x1000.npz"), quiet=True)
    r = pipeline.convert_model(out / "audio.tflite", ["tflite-int8"], opts, outdir=tmp_path)
    assert r.hops[0]["validation"]["passed"] is True   # on its own (too loud) data it agrees
    code, text, err = run_cli(capsys, "validate", out / "audio.tflite", dst / "audio_int8.tflite",
                              "--data", out / "audio.npz")
    assert code == 0, text + err
    code, text, err = run_cli(capsys, "validate", out / "audio.tflite", tmp_path / "audio_int8.tflite",
                              "--data", out / "audio.npz")
    assert code == 1 and "FAILED" in text, text + err


def test_two_input_model_each_input_its_own_array(models, tmp_path):
    out, _, frames, context = models
    opts = ConvertOptions(calibration_data=str(out / "two.npz"), io_dtype="int8", quiet=True)
    r = pipeline.convert_model(out / "two.tflite", ["tflite-int8"], opts, outdir=tmp_path)
    v = r.hops[0]["validation"]
    assert v["passed"] is True and v["inputs"] == "16 samples from two.npz", v
    side = json.loads((tmp_path / "two_int8.tflite.edgeport.json").read_text())
    assert side["calibration"]["inputs"] == {frames: {"shape": [1, 64], "dtype": "float32"},
                                             context: {"shape": [1, 6], "dtype": "float32"}}
    from edge.tflite_model import TFLiteModel

    m = TFLiteModel.load(tmp_path / "two_int8.tflite")
    assert [t.dtype for t in m.inputs()] == ["INT8", "INT8"]
    # a corrupted int8 model (the last layer's weights negated) fails the same validation
    from tensorflow.lite.tools import flatbuffer_utils as fu

    from converters.artefact import Artefact
    from converters.validation.validate import validate_pair

    model = fu.read_model(str(tmp_path / "two_int8.tflite"))
    g = model.subgraphs[0]
    fcs = [op for op in g.operators if model.operatorCodes[op.opcodeIndex].builtinCode == 9]
    buf = model.buffers[g.tensors[fcs[-1].inputs[1]].buffer]
    buf.data = (-np.frombuffer(bytes(buf.data), np.int8).clip(-127)).astype(np.int8).view(np.uint8)
    fu.write_model(model, str(tmp_path / "broken.tflite"))
    bad = validate_pair(Artefact.open(out / "two.tflite"),
                        Artefact(str(tmp_path / "broken.tflite"), formats.TFLITE_INT8, {}), opts)
    assert not bad.passed and bad.inputs == "16 samples from two.npz"


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bad_data_is_one_line_naming_the_input(models, tmp_path, capsys):
    out, name, frames, context = models
    src = tmp_path / "audio.tflite"
    shutil.copyfile(out / "audio.tflite", src)
    cases = {
        "key": ({"speech": np.zeros((2, 1, SAMPLES), np.float32)}, ["'speech' that is no input", name]),
        "shape": ({name: np.zeros((2, 1, 640), np.float32)},
                  [f"'{name}' has samples of shape [1, 640]", f"float32[1,{SAMPLES}]"]),
        "rank": ({name: np.zeros((2, 2, 1, SAMPLES), np.float32)}, ["has shape [2, 2, 1, 1280]"]),
        "dtype": ({name: np.zeros((2, 1, SAMPLES), np.int16)}, ["is int16", f"float32[1,{SAMPLES}]"]),
        "nan": ({name: np.full((2, 1, SAMPLES), np.nan, np.float32)}, ["NaN"]),
    }
    for case, (arrays, words) in cases.items():
        npz = tmp_path / f"{case}.npz"
        np.savez(npz, **arrays)
        code, text, err = run_cli(capsys, "convert", src, "--to", "tflite-int8", "--data", npz, "--quiet",
                                  "-o", tmp_path / case)
        line = _one_error_line(err)
        assert code == 2, (case, line)
        for w in words:
            assert w in line, (case, line)
        assert not (tmp_path / case / "audio_int8.tflite").exists()
    npz = tmp_path / "one.npz"
    np.savez(npz, **{frames: np.zeros((3, 1, 64), np.float32)})
    code, text, err = run_cli(capsys, "convert", out / "two.tflite", "--to", "tflite-int8", "--data", npz, "--quiet",
                              "-o", tmp_path / "two")
    line = _one_error_line(err)
    assert code == 2 and f"no array for input '{context}' takes float32[1,6]" in line, line


def test_neither_flag_is_one_line_naming_both(models, tmp_path, capsys):
    out, *_ = models
    for target in ("tflite-int8", "edgetpu"):
        code, text, err = run_cli(capsys, "convert", out / "audio.tflite", "--to", target, "-o", tmp_path, "--quiet")
        line = _one_error_line(err)
        assert code == 2 and "--calibration DIR" in line and "--data FILE.npz" in line, line


def test_images_for_a_non_image_model_name_data(models, tmp_path, capsys, color_images):
    out, *_ = models
    code, text, err = run_cli(capsys, "convert", out / "audio.tflite", "--to", "tflite-int8",
                              "--calibration", color_images, "-o", tmp_path, "--quiet")
    line = _one_error_line(err)
    assert code == 2 and "not an image" in line and "--data FILE.npz" in line, line


def test_open_input_dimensions_take_the_samples_shape(models, tmp_path):
    """A [-1, -1, 4] input is quantized at the shape of the --data samples, and the int8
    model is static (the Edge TPU compiler needs it); the sidecar says what was fixed."""
    out, *_ = models
    opts = ConvertOptions(calibration_data=str(out / "open.npz"), quiet=True)
    r = pipeline.convert_model(out / "open.tflite", ["tflite-int8"], opts, outdir=tmp_path)
    assert r.hops[0]["validation"]["passed"] is True, r.hops[0]["validation"]
    side = json.loads((tmp_path / "open_int8.tflite.edgeport.json").read_text())
    (name, fixed), = side["conversion"]["input_shapes_fixed"].items()
    assert fixed == {"signature": [-1, -1, 4], "shape": [1, 32, 4]}
    from edge.tflite_model import TFLiteModel

    t = TFLiteModel.load(tmp_path / "open_int8.tflite").inputs()[0]
    assert list(t.shape) == [1, 32, 4] and (t.shape_signature is None or -1 not in list(t.shape_signature))


def test_an_int8_model_that_crashes_the_runtime_is_not_kept(models, tmp_path, monkeypatch, capsys):
    """ai-edge-litert's XNNPack delegate kills the process on some int8 models (openWakeWord's
    melspectrogram): the model is tried in a child process first, and a crash is one line."""
    from converters.quantize import tflite_int8

    out, *_ = models
    monkeypatch.setattr(tflite_int8, "_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    code, text, err = run_cli(capsys, "convert", out / "open.tflite", "--to", "tflite-int8", "--data",
                              out / "open.npz", "-o", tmp_path, "--quiet")
    line = _one_error_line(err)
    assert code == 1 and "crashed (SIGSEGV)" in line and "not kept" in line, line
    assert not (tmp_path / "open_int8.tflite").exists()


def test_a_key_without_tensorflows_mangling_names_the_input(models, tmp_path, capsys):
    """'audio' feeds 'serving_default_audio:0' (how the TFLite converter and onnx2tf name
    inputs), in calibration and in validation alike: one file serves an ONNX model and the
    TFLite made from it."""
    from converters.quantize.calibration import data_for_inputs

    names = ["serving_default_audio:0", "serving_default_sr:0"]
    assert list(data_for_inputs({"audio": 1, "serving_default_sr:0": 2}, names)) == names
    assert list(data_for_inputs({"speech": 1}, names)) == ["speech"]           # refused later
    # and the other way: a file keyed for the TFLite feeds the ONNX tf2onnx made from it
    assert list(data_for_inputs({"serving_default_audio:0": 1, "sr": 2}, ["audio", "sr"])) == ["audio", "sr"]
    out, name, *_ = models
    npz = tmp_path / "bare.npz"
    np.savez(npz, audio=np.load(out / "audio.npz")[name])
    opts = ConvertOptions(calibration_data=str(npz), quiet=True)
    r = pipeline.convert_model(out / "audio.tflite", ["tflite-int8"], opts, outdir=tmp_path)
    assert r.hops[0]["validation"]["passed"] is True, r.hops[0]["validation"]
    code, text, err = run_cli(capsys, "validate", out / "audio.tflite", tmp_path / "audio_int8.tflite",
                              "--data", npz)
    assert code == 0 and "24 samples from bare.npz" in text, text + err


@pytest.mark.slow
def test_onnx_to_int8_through_onnx2tf_on_arrays(tmp_path):
    """net.onnx --to tflite-int8 --data: onnx -> tflite (onnx2tf) -> tflite-int8, both hops
    validated on the arrays keyed by the ONNX input name."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (64, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (16, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["audio", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["scores"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "net.onnx"))
    np.savez(tmp_path / "calib.npz", audio=rng.normal(0, 1, (40, 1, 64)).astype(np.float32))
    from converters.validation.comparator import Tolerances

    # a random 3-class head on random data: its int8 flips one near-tie of 8 held-out samples
    # (7/8, cosine 1.0000); the class agreement this test was written under is 0.8
    opts = ConvertOptions(calibration_data=str(tmp_path / "calib.npz"), tolerances=Tolerances(min_top1=0.8))
    r = pipeline.convert_model(tmp_path / "net.onnx", ["tflite-int8"], opts, outdir=tmp_path / "out")
    assert r.routes["tflite-int8"] == ["onnx", "tflite", "tflite-int8"]
    # the float hop on every sample; the int8 hop on the 8 (every fifth) held back from calibration
    for hop, n in zip(r.hops, (40, 8)):
        assert hop["validation"]["passed"] is True and hop["validation"]["inputs"] == f"{n} samples from calib.npz", hop
