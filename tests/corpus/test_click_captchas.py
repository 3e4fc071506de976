"""The corpus's rendered click captchas (scripts/make_click_captchas.py): the same captchas
every run, one per photo, and each the photo with characters drawn over it, not noise."""

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import make_click_captchas as captchas  # noqa: E402


def test_captchas_are_deterministic_distinct_and_photos_with_characters(tmp_path):
    from PIL import Image

    assert captchas.write_captchas(str(tmp_path / "a"), 4) == 4
    captchas.write_captchas(str(tmp_path / "b"), 4)
    first = sorted((tmp_path / "a").glob("captcha_*.png"))
    data = [p.read_bytes() for p in first]
    assert data == [p.read_bytes() for p in sorted((tmp_path / "b").glob("captcha_*.png"))]
    assert len(set(data)) == 4
    assert not list(tmp_path.glob("a/*.tmp"))
    photos = sorted((REPO / "images").glob("*.jpg"))[:4]
    for path, photo in zip(first, photos):
        im = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        assert im.shape == (captchas.SIZE, captchas.SIZE, 3)
        with Image.open(photo) as p:
            base = np.asarray(p.convert("RGB").resize((captchas.SIZE, captchas.SIZE), Image.LANCZOS),
                              dtype=np.int16)
        changed = np.abs(im - base).max(axis=2) > 40
        # four characters drawn over the photo: a few percent of the pixels, in every quarter
        assert 0.005 < changed.mean() < 0.2, changed.mean()
        half = captchas.SIZE // 2
        for q in (changed[:half, :half], changed[:half, half:], changed[half:, :half], changed[half:, half:]):
            assert q.mean() > 0.002
