"""A float16 Core ML model whose values exceed float16's range: the validation names the
overflow (the op, the values it reached) and the fix (--coreml-precision float32), instead
of a bare cosine NaN."""

import textwrap

import pytest

from tests.conftest import run_cli

pytest.importorskip("torch")
pytest.importorskip("coremltools")

SQUARES = textwrap.dedent('''
    import torch

    class Net(torch.nn.Module):
        """Squared deviations, as in an audio model's variance: 1e5 before the mean."""
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 8)

        def forward(self, x):
            d = self.lin(x) * 400.0
            return (d * d).mean(dim=1, keepdim=True) / 1e6

    def build():
        return Net()
''')


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    import torch

    d = tmp_path_factory.mktemp("fp16")
    (d / "sq.py").write_text(SQUARES)
    from converters.routes.torch_loading import import_factory

    torch.manual_seed(0)
    torch.save(import_factory(f"{d / 'sq.py'}:build")().state_dict(), d / "sq.pt")
    return d


def test_float16_overflow_is_named_with_its_fix(capsys, squares, tmp_path):
    """--coreml-precision float16 asked for: no fallback, the failure names the overflow."""
    code, out, err = run_cli(capsys, "convert", squares / "sq.pt", "--torch-model", f"{squares / 'sq.py'}:build",
                             "--input-shape", "1", "8", "--to", "coreml", "-o", tmp_path / "a",
                             "--coreml-precision", "float16")
    assert code == 1
    assert "float16 overflow" in out and "65504" in out and "--coreml-precision float32" in out
    assert "overflow encountered" not in err  # recorded, not a numpy warning


def test_float16_overflow_falls_back_to_float32_and_says_so(capsys, squares, tmp_path):
    """Precision left to edgeport: the overflowing float16 program is converted again in
    float32, which validates; the progress line, the result and the sidecar say so."""
    import json

    code, out, err = run_cli(capsys, "convert", squares / "sq.pt", "--torch-model", f"{squares / 'sq.py'}:build",
                             "--input-shape", "1", "8", "--to", "coreml", "-o", tmp_path / "a")
    assert code == 0, out + err
    assert "converting again with --coreml-precision float32" in err
    assert "float32 program (float16 overflowed)" in out
    side = json.loads((tmp_path / "a" / "sq.mlpackage.edgeport.json").read_text())
    assert "float16 program overflowed" in side["precision_fallback"]
    assert side["validation"]["passed"] is True


def test_executor_records_the_first_overflowing_op():
    import numpy as np

    from converters.validation.mil.executor import FP16_MAX, MLProgramExecutor

    class Info:
        type = "mul"

    class Step:
        info = Info()

    ex = MLProgramExecutor.__new__(MLProgramExecutor)
    ex.fp16_overflow = None
    big = np.array([1.0, 7e4], np.float32)
    ex._check_overflow(Step(), "y", big, np.asarray(big, np.float16).astype(np.float32))
    assert ex.fp16_overflow == {"op": "mul", "output": "y", "max_abs": pytest.approx(7e4)}
    ex.fp16_overflow = None
    inf32 = np.array([np.inf, 1.0], np.float32)  # infinite in float32 too: not float16's doing
    ex._check_overflow(Step(), "y", inf32, inf32)
    assert ex.fp16_overflow is None and FP16_MAX == 65504.0
