"""int8 is judged on data it did not see: every fifth calibration sample is held back for
validation when that gives at least 8; with fewer, the verdict says it was reached on
calibration data. Images (a folder) and arrays (--data .npz) alike."""

import json
import os

import numpy as np
import pytest

from converters.quantize.calibration import (
    MIN_HOLDOUT,
    load_array_calibration,
    load_calibration,
    split_holdout,
    validation_holdout,
)
from tests.conftest import run_cli

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.mark.parametrize("n", list(range(61)))
def test_split_holds_every_fifth_back_only_when_there_are_at_least_eight(n):
    keep, held = split_holdout(n)
    assert sorted(keep + held) == list(range(n)) and not set(keep) & set(held)
    if n >= 5 * MIN_HOLDOUT:
        assert held == list(range(4, n, 5)) and len(held) >= MIN_HOLDOUT
    else:
        assert held == [] and keep == list(range(n))


def _images(folder, n):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"im{i:03d}.png")
    return folder


SPEC = {"size": [12, 12], "layout": "NHWC", "mean": [0.0], "std": [255.0]}


def test_a_folder_of_40_images_calibrates_on_32_and_validation_gets_the_other_8(tmp_path):
    folder = _images(tmp_path / "im", 40)
    lines = []
    cal = load_calibration(str(folder), SPEC, count=100, progress=lines.append)
    assert len(cal.tensors) == 32 and len(cal.files) == 32
    held = [os.path.basename(f) for f in cal.held_out]
    assert held == [f"im{i:03d}.png" for i in range(4, 40, 5)]
    assert not set(held) & {os.path.basename(f) for f in cal.files}
    s = cal.summary()
    assert s["count"] == 32 and s["held_out"]["count"] == 8 and s["held_out"]["files"] == held
    assert any("8 of 40 samples (every fifth image) held back for validation" in x for x in lines)
    images, data, note = validation_holdout(s, folder=str(folder))
    assert [os.path.basename(f) for f in images] == held and data is None
    assert "8 held-out samples" in note and "never saw" in note


def test_a_folder_of_12_images_calibrates_on_all_and_says_validation_is_on_them(tmp_path):
    folder = _images(tmp_path / "im", 12)
    cal = load_calibration(str(folder), SPEC, count=100)
    assert len(cal.tensors) == 12 and cal.held_out == []
    s = cal.summary()
    assert s["held_out"]["count"] == 0 and "too few" in s["held_out"]["reason"]
    images, data, note = validation_holdout(s, folder=str(folder))
    assert images is None and data is None
    assert note.startswith("verdict reached on calibration data")


def test_holding_back_can_be_turned_off_for_benchmarks(tmp_path):
    folder = _images(tmp_path / "im", 40)
    cal = load_calibration(str(folder), SPEC, count=100, holdout=False)
    held = cal.summary()["held_out"]
    assert len(cal.tensors) == 40 and held["count"] == 0 and "turned off" in held["reason"]


# -- arrays, end to end through convert --------------------------------------------------------
def _audio_model(path):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    audio = tf.keras.Input((256,), batch_size=1, name="audio")
    x = tf.keras.layers.Reshape((16, 16))(audio)
    x = tf.keras.layers.Conv1D(8, 3, activation="relu")(x)
    x = tf.keras.layers.GlobalAveragePooling1D()(x)
    y = tf.keras.layers.Dense(4, name="scores")(x)
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(audio, y)).convert())
    from edge.tflite_model import TFLiteModel

    return TFLiteModel.load(path).inputs()[0].name


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    d = tmp_path_factory.mktemp("holdout_arrays")
    name = _audio_model(d / "audio.tflite")
    rng = np.random.default_rng(0)
    for n in (40, 24):
        np.savez(d / f"audio{n}.npz", **{name: rng.normal(0, 1, (n, 1, 256)).astype(np.float32)})
    return d, name


def test_npz_samples_are_held_back_in_load_array_calibration(audio):
    d, name = audio
    cal = load_array_calibration(str(d / "audio40.npz"), [(name, (1, 256), np.float32)])
    assert len(cal) == 32 and cal.held_out == list(range(4, 40, 5))
    s = cal.summary()
    assert s["count"] == 32 and s["held_out"]["indices"] == cal.held_out
    _, data, note = validation_holdout(s, data_path=str(d / "audio40.npz"))
    full = np.load(d / "audio40.npz")[name]
    assert np.array_equal(data[name], full[4::5]) and "8 held-out" in note


def test_convert_holds_back_npz_samples_and_says_so_in_output_sidecar_and_verdict(audio, tmp_path,
                                                                                   capsys):
    d, _ = audio
    code, out, err = run_cli(capsys, "convert", d / "audio.tflite", "--to", "tflite-int8",
                             "--data", d / "audio40.npz", "-o", tmp_path)
    assert code == 0, out + err
    text = out + err
    assert "8 of 40 samples (every fifth sample) held back for validation" in text
    assert "validated on 8 held-out samples" in text
    side = json.loads((tmp_path / "audio_int8.tflite.edgeport.json").read_text())
    assert side["calibration"]["count"] == 32 and side["calibration"]["held_out"]["count"] == 8
    v = side["validation"]
    assert v["passed"] is True and v["inputs"] == "8 samples from audio40.npz"
    assert "8 held-out samples" in v["summary"]


def test_convert_with_too_few_npz_samples_says_the_verdict_is_on_calibration_data(audio, tmp_path,
                                                                                   capsys):
    d, _ = audio
    code, out, err = run_cli(capsys, "convert", d / "audio.tflite", "--to", "tflite-int8",
                             "--data", d / "audio24.npz", "-o", tmp_path)
    assert code == 0, out + err
    side = json.loads((tmp_path / "audio_int8.tflite.edgeport.json").read_text())
    assert side["calibration"]["count"] == 24 and side["calibration"]["held_out"]["count"] == 0
    v = side["validation"]
    assert v["inputs"] == "24 samples from audio24.npz"
    assert "verdict reached on calibration data" in v["summary"]
    assert "verdict reached on calibration data" in out + err


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_convert_from_a_folder_of_40_photos_validates_int8_on_the_8_held_back(tmp_path, capsys):
    from tests.tiny_tf import build_classifier, make_images

    build_classifier(tmp_path / "cls.keras")
    folder = make_images(tmp_path / "cal", n=40)
    code, out, err = run_cli(capsys, "convert", tmp_path / "cls.keras", "--to", "tflite-int8",
                             "--calibration", folder, "--mean", "0", "--std", "255",
                             "-o", tmp_path / "out")
    assert code == 0, out + err
    assert "8 of 40 samples (every fifth image) held back for validation" in out + err
    side = json.loads((tmp_path / "out" / "cls_int8.tflite.edgeport.json").read_text())
    held = side["calibration"]["held_out"]
    assert side["calibration"]["count"] == 32 and held["files"] == [f"img_{i:02d}.png"
                                                                    for i in range(4, 40, 5)]
    v = side["validation"]
    assert v["passed"] is True and v["inputs"] == "8 images", v
    assert "validated on 8 held-out samples" in v["summary"]
