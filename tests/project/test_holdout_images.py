"""images/holdout/: real photos held out from calibration, each listed with its license."""
import importlib.util
from pathlib import Path

import pytest
from PIL import Image

IMAGES = Path(__file__).resolve().parents[2] / "images"
HOLDOUT = IMAGES / "holdout"
PHOTOS = sorted(HOLDOUT.glob("*.jpg"))


def readme_rows():
    """{file: {column: cell}} from the table in images/holdout/README.md."""
    header, rows = None, {}
    for line in (HOLDOUT / "README.md").read_text("utf-8").splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
        elif cells[0].endswith(".jpg"):
            rows[cells[0]] = dict(zip(header, cells))
    return rows


def _collect_holdout():
    spec = importlib.util.spec_from_file_location("collect_holdout",
                                                  IMAGES.parent / "scripts" / "collect_holdout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


DHASH = _collect_holdout().dhash   # the hash collect_holdout.py dedups with


def small_hash(path):
    """64-bit difference hash of a small grayscale thumbnail: equal for the same picture."""
    with Image.open(path) as img:
        return DHASH(img)


def test_enough_photos():
    assert len(PHOTOS) >= 40


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_photo_is_small_rgb_jpeg(path):
    with Image.open(path) as img:
        assert img.format == "JPEG"
        assert img.mode == "RGB"
        assert max(img.size) <= 480
        assert min(img.size) >= 150
    assert path.name == path.name.lower() and path.name.isascii()


def test_readme_lists_every_photo_with_a_license():
    rows = readme_rows()
    names = {p.name for p in PHOTOS}
    assert names - set(rows) == set(), "photos missing from README.md"
    assert set(rows) - names == set(), "README.md rows without a file"
    for name, row in rows.items():
        assert row.get("license"), f"{name}: no license in README.md"


def test_no_calibration_photo_in_holdout():
    calibration = {small_hash(p): p.name for p in IMAGES.glob("*.jpg")}
    same = {p.name: calibration[small_hash(p)] for p in PHOTOS if small_hash(p) in calibration}
    assert same == {}
