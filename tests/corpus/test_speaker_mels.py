"""Resemblyzer's mel frames computed without librosa (scripts/make_audio_calibration.py) match
librosa.feature.melspectrogram as resemblyzer calls it. The reference numbers were computed once
with librosa 0.11.0 on the same generated tone (librosa is not a dependency here)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mac():
    spec = importlib.util.spec_from_file_location("make_audio_calibration",
                                                  REPO / "scripts" / "make_audio_calibration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mel_filters_match_librosa(mac):
    fb = mac.mel_filters()
    assert fb.shape == (40, 201)
    # librosa.filters.mel(sr=16000, n_fft=400, n_mels=40): row sums and peak bins of rows 0, 8, ..
    np.testing.assert_allclose(fb.sum(axis=1)[::8], [0.02480904, 0.02480904, 0.02418397,
                                                     0.02478942, 0.02504904], rtol=1e-5)
    assert [int(np.argmax(r)) for r in fb[::8]] == [2, 17, 32, 59, 109]


def test_speaker_mels_match_librosa(mac):
    t = np.arange(16000) / 16000
    audio = 3000 * np.sin(2 * np.pi * 440 * t) + 1000 * np.sin(2 * np.pi * 2500 * t)
    mels = mac.speaker_mels(audio).astype(np.float64)
    assert mels.shape == (101, 40)                      # 1 s at hop 10 ms, centred
    frame = mels[50]
    assert list(np.argsort(-frame)[:4]) == [5, 4, 6, 25]   # 440 Hz, then 2.5 kHz
    np.testing.assert_allclose(frame[[5, 4, 6, 25]], [1.37724, 0.182365, 0.149359, 0.0474154], rtol=1e-4)
    np.testing.assert_allclose(mels[0].sum(), 0.887519, rtol=1e-4)   # the zero-padded first frame
    np.testing.assert_allclose(mels.sum(), 178.254, rtol=1e-4)


def test_wheel_found_whatever_its_capitals(tmp_path, monkeypatch):
    """pip keeps a project's capitals in the wheel's file name (Resemblyzer-0.1.4-...): the
    wheel already downloaded is found, and pip is not run again."""
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    import fetch_corpus

    (tmp_path / "Resemblyzer-0.1.4-py3-none-any.whl").write_bytes(b"")
    monkeypatch.setattr(fetch_corpus.subprocess, "run", lambda *a, **k: pytest.fail("pip was run"))
    got = fetch_corpus.download_wheel(fetch_corpus.WHEELS["resemblyzer"], str(tmp_path))
    assert Path(got).name == "Resemblyzer-0.1.4-py3-none-any.whl"
