"""Degenerate calibration data (all zeros) is refused in one line naming the data, before the
quantizer makes an int8 model that crashes the runtime; when only some inputs are constant,
a crash is reported with the data named, not another model family."""

import numpy as np
import pytest

from tests.conftest import DATA, run_cli


@pytest.mark.parametrize("fill", [0.0, 0.5])
def test_constant_calibration_data_is_refused_naming_the_data(tmp_path, capsys, fill):
    data = tmp_path / "zeros.npz"
    np.savez(data, image=np.full((4, 1, 16, 16, 3), fill, np.float32))
    code, out, err = run_cli(capsys, "convert", DATA / "color_float.tflite", "--to", "tflite-int8",
                             "--data", data, "-o", tmp_path / "out", "--quiet")
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert "--data zeros.npz is constant" in line and "openWakeWord" not in err, err
    assert not list((tmp_path / "out").glob("*_int8.tflite")) if (tmp_path / "out").exists() else True


def test_constant_inputs_are_found_per_input():
    from converters.quantize.calibration import ArrayCalibration, constant_inputs

    rng = np.random.default_rng(0)
    samples = [[rng.random((1, 4), dtype=np.float32), np.full((1,), 16000.0, np.float32)] for _ in range(3)]
    cal = ArrayCalibration("d.npz", "0" * 64, [("x", (1, 4), np.float32), ("sr", (1,), np.float32)], samples)
    assert constant_inputs(cal) == [(1, 16000.0)]
    varied = [[rng.random((1, 4), dtype=np.float32)] for _ in range(3)]
    assert constant_inputs(ArrayCalibration("d.npz", "0" * 64, [("x", (1, 4), np.float32)], varied)) == []
