"""Every command that reads an image folder skips a damaged image with a warning and stops
only when none is left (edge.preprocess.readable_images): validate --inputs DIR, eval,
--calibration DIR, as classify always did."""

import pytest

from edge.errors import InputError
from tests.conftest import DATA, run_cli

MODEL = str(DATA / "color_float.tflite")


def _folder(path, good=3, bad=1):
    from PIL import Image

    path.mkdir()
    for i in range(good):
        Image.new("RGB", (20, 20), (40 * i, 200, 30)).save(path / f"good{i}.png")
    for i in range(bad):
        (path / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return path


def test_validate_inputs_dir_skips_a_damaged_image(tmp_path, capsys):
    images = _folder(tmp_path / "imgs")
    code, out, err = run_cli(capsys, "validate", MODEL, MODEL, "--inputs", images, "--json")
    assert code == 0, err
    assert "warning: skipped" in err and "bad0.jpg" in err


def test_validate_stops_when_no_image_is_readable(tmp_path, capsys):
    images = _folder(tmp_path / "imgs", good=0, bad=2)
    code, out, err = run_cli(capsys, "validate", MODEL, MODEL, "--inputs", images)
    assert code == 2 and "none of the 2 images could be read" in err and "internal error" not in err


def test_eval_skips_a_damaged_image(tmp_path, capsys):
    root = tmp_path / "classes"
    root.mkdir()
    _folder(root / "red", good=2, bad=1)
    _folder(root / "green", good=2, bad=0)
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\ndark\nlight\n")
    code, out, err = run_cli(capsys, "eval", MODEL, "--images", root, "--labels", labels, "--json")
    assert code == 0, err
    assert "warning: skipped" in err
    import json

    assert json.loads(out)["images"] == 5  # listed; the model's own count is of the readable ones


def test_calibration_skips_a_damaged_image_and_states_the_count(tmp_path):
    from converters.quantize.calibration import load_calibration

    images = _folder(tmp_path / "cal", good=3, bad=2)
    notes = []
    spec = {"size": [16, 16], "mean": [0.0], "std": [255.0], "layout": "NHWC", "channels": 3}
    cal = load_calibration(str(images), spec, count=100, progress=notes.append)
    assert len(cal) == 3 and cal.summary()["count"] == 3
    assert "calibration: 3 images used (2 damaged skipped)" in notes
    with pytest.raises(InputError, match="none of the 2 calibration images could be read"):
        load_calibration(str(_folder(tmp_path / "bad", good=0, bad=2)), spec, count=100)
