"""images/holdout/: real photos held out from calibration, each listed with its license."""
from pathlib import Path

import pytest
from PIL import Image

IMAGES = Path(__file__).resolve().parent.parent / "images"
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


def small_hash(path):
    """64-bit difference hash of a 9x8 grayscale thumbnail: equal for the same picture."""
    px = list(Image.open(path).convert("L").resize((9, 8), Image.BILINEAR).tobytes())
    return sum(1 << i for i in range(64) if px[i // 8 * 9 + i % 8] > px[i // 8 * 9 + i % 8 + 1])


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
