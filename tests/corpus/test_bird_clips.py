"""BirdNET's clips (scripts/make_bird_clips.py): recordings resampled to 48 kHz keep their
pitch, and are cut into BirdNET's 3 s windows every 0.5 s, a short one padded with zeros.
(The Debian download and decoding are exercised by the corpus test, which runs the script.)"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import make_bird_clips as clips  # noqa: E402


@pytest.mark.parametrize("rate", [44100, 22050, 32000, 48000])
@pytest.mark.parametrize("hz", [440.0, 2500.0, 7000.0])
def test_resampling_keeps_the_pitch_and_the_duration(rate, hz):
    t = np.arange(rate) / rate                        # one second
    y = clips.resample(np.sin(2 * np.pi * hz * t), rate)
    assert len(y) == clips.RATE
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spectrum) - hz) <= 1         # bins are 1 Hz apart over one second
    assert 0.95 < np.max(np.abs(y[1000:-1000])) < 1.05


@pytest.mark.parametrize("seconds", [0.4, 2.99, 3.0, 3.49, 3.5, 12.35])
def test_windows_are_3_s_every_half_second_and_a_short_sound_is_padded(seconds):
    n = int(round(seconds * clips.RATE))
    x = np.arange(1, n + 1, dtype=np.float64)         # no zeros, so padding shows
    w = clips.windows(x)
    assert w.shape[1] == clips.WINDOW == 3 * clips.RATE
    if n < clips.WINDOW:
        assert len(w) == 1 and np.array_equal(w[0, :n], x) and not w[0, n:].any()
    else:
        assert len(w) == 1 + (n - clips.WINDOW) // clips.HOP
        for k, row in enumerate(w):
            assert np.array_equal(row, x[k * clips.HOP:k * clips.HOP + clips.WINDOW])
