"""`edgeport eval`: top-1/top-k accuracy of several models on one folder per class."""

import json
import os

import pytest

from edgeport.cli import main
from tests.converters.validation.test_validate_runners import (
    LABELS,
    SPEC,
    calibration_arrays,
    color_images,
    color_keras,
    tflite_from_keras,
    with_sidecar,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    d = tmp_path_factory.mktemp("eval")
    flat, classes = color_images(d / "images", per_class=3)
    # folder names differ from the label lines: case, and a comma-separated synonym
    os.rename(classes / "red", classes / "Red")
    os.rename(classes / "blue", classes / "Azure")
    (d / "labels.txt").write_text("red\ngreen\nblue, azure\n")
    km = color_keras()
    km.save(str(d / "color.keras"))
    tflite_from_keras(km, d / "color_float.tflite")
    tflite_from_keras(km, d / "color_int8.tflite", calibration_arrays(flat))
    # a model that swaps red and green: its accuracy must show it
    bad = color_keras()
    w, b = bad.get_layer("logits").get_weights()
    bad.get_layer("logits").set_weights([w[:, [1, 0, 2]], b])
    tflite_from_keras(bad, d / "color_swapped.tflite")
    for n in ("color.keras", "color_float.tflite", "color_int8.tflite", "color_swapped.tflite"):
        with_sidecar(d / n, preprocessing=SPEC, labels=LABELS)
    return d, classes


def test_accuracy_table_of_several_models(setup, capsys):
    d, classes = setup
    models = [str(d / n) for n in ("color.keras", "color_float.tflite", "color_int8.tflite",
                                   "color_swapped.tflite")]
    code = main(["eval", *models, "--images", str(classes), "--labels", str(d / "labels.txt"),
                 "-k", "2", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["command"] == "eval" and data["exit_code"] == 0 and data["k"] == 2
    assert data["images"] == 9 and data["classes"] == 3
    acc = {os.path.basename(r["model"]): (r["top1"], r["topk"]) for r in data["models"]}
    assert acc["color.keras"] == (1.0, 1.0)
    assert acc["color_float.tflite"] == (1.0, 1.0)
    assert acc["color_int8.tflite"] == (1.0, 1.0)
    # red and green images are misclassified, blue ones still right: 3/9 top-1
    assert acc["color_swapped.tflite"][0] == pytest.approx(3 / 9)
    assert acc["color_swapped.tflite"][1] == 1.0


def test_table_and_labels_from_sidecar(setup, capsys):
    d, classes = setup
    # the sidecar labels have no "azure" synonym: the folder cannot be matched
    code = main(["eval", str(d / "color_float.tflite"), "--images", str(classes)])
    assert code == 2 and "Azure" in capsys.readouterr().err
    code = main(["eval", str(d / "color_float.tflite"), "--images", str(classes),
                 "--labels", str(d / "labels.txt")])
    out = capsys.readouterr().out
    assert code == 0 and "9 images in 3 classes" in out and "100.0%" in out


def test_class_matching_rules():
    from converters.validation.evaluate import match_classes

    labels = {0: "background", 1: "tench, Tinca tinca", 2: "great white shark", 3: "ice_bear"}
    got = match_classes(["Tinca_Tinca", "great-white-shark", "ICE BEAR", "1"], labels)
    assert got == {"Tinca_Tinca": 1, "great-white-shark": 2, "ICE BEAR": 3, "1": 1}
    from edge.errors import InputError

    with pytest.raises(InputError):
        match_classes(["unicorn"], labels)
