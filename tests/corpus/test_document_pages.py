"""The corpus's rendered document pages (scripts/make_document_pages.py): the same pages every
run, different from each other, and pages (mostly white paper with ink), not noise."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import make_document_pages as pages  # noqa: E402


def test_pages_are_deterministic_distinct_and_look_like_paper(tmp_path):
    first = pages.write_pages(str(tmp_path / "a"), 3)
    again = pages.write_pages(str(tmp_path / "b"), 3)
    data = [Path(p).read_bytes() for p in first]
    assert data == [Path(p).read_bytes() for p in again]
    assert len(set(data)) == 3
    from PIL import Image

    for p in first:
        im = np.asarray(Image.open(p).convert("L"))
        assert im.shape == (pages.H, pages.W)
        white = np.mean(im > 240)
        assert 0.6 < white < 0.99, white          # paper, with text, a table and a chart on it
        assert np.mean(im < 80) > 0.005            # dark ink
        assert len(list(tmp_path.glob("a/*.tmp"))) == 0
