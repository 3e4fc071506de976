"""Models as people save and bring them: the route the options can take, and fallbacks that say so.

* The planner takes a route whose every conversion has what it needs from the options: a
  non-image model with `--data FILE.npz` reaches tflite-int8 through the float TFLite (whose
  quantizer calibrates on arrays), not through a cheaper conversion that needs images.
* An LSTM through the state-dict route: coremltools' torch.export frontend has no `lstm`, its
  TorchScript frontend has; the Core ML conversion falls back to the trace and says so.
"""

import os
import textwrap

import pytest

from converters import formats
from converters.options import ConvertOptions
from converters.registry import load_registry


def _pairs():
    reg = load_registry()
    return sorted({(src, tgt) for src in {c.source for c in reg.values()}
                   for tgt in {c.target for c in reg.values()} if src != tgt})


@pytest.mark.parametrize("given", [{"calibration_data": "x.npz"}, {"calibration": "images/"}])
def test_planner_takes_a_route_the_options_can_run(given):
    """Over every source and target: when some route's needs are all met by the options, the
    plan is such a route (never a cheaper one that is then refused for a missing flag)."""
    from converters.pipeline import plan_each
    from converters.registry import plan_route

    options = ConvertOptions(**given)
    checked = 0
    for src, tgt in _pairs():
        try:
            runnable = plan_route(src, tgt, usable=lambda c: not c.missing(options))
        except Exception:
            continue  # no route these options can run: the refusal names the flag (tested elsewhere)
        routes, refused = plan_each(src, [tgt], options)
        assert tgt in routes, f"{src} -> {tgt} refused ({refused.get(tgt)}) though {runnable} runs"
        assert not any(c.missing(options) for c in routes[tgt])
        checked += 1
    assert checked > 10


def test_non_image_torch_model_to_int8_with_data_is_one_step():
    from converters.pipeline import plan_each

    for src in formats.TORCH_FORMATS + (formats.KERAS, formats.SAVEDMODEL):
        routes, refused = plan_each(src, [formats.TFLITE_INT8], ConvertOptions(calibration_data="x.npz"))
        assert not refused, refused
        assert [c.target for c in routes[formats.TFLITE_INT8]][-2:] == [formats.TFLITE, formats.TFLITE_INT8]
    # images given: the direct route (it AdaRounds the PyTorch weights on them) is still used
    routes, _ = plan_each(formats.TORCH_MODULE, [formats.TFLITE_INT8], ConvertOptions(calibration="images/"))
    assert len(routes[formats.TFLITE_INT8]) == 1


MLP = textwrap.dedent('''
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(16, 12)
            self.b = torch.nn.Linear(12, 4)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    def build():
        return Net()
''')

LSTM = textwrap.dedent('''
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(8, 6, batch_first=True)
            self.head = torch.nn.Linear(6, 3)

        def forward(self, x):
            y, _ = self.lstm(x)
            return self.head(y[:, -1])

    def build():
        return Net()
''')


def _state_dict_model(tmp_path, source, name):
    torch = pytest.importorskip("torch")
    from converters.routes.torch_loading import import_factory

    (tmp_path / f"{name}.py").write_text(source)
    torch.manual_seed(0)
    model = import_factory(f"{tmp_path / name}.py:build")().eval()
    # a checkpoint as a training script saves it
    torch.save({"model_state": model.state_dict(), "optimizer_state": {}, "step": 3}, tmp_path / f"{name}.pt")
    return model, f"{tmp_path / name}.py:build"


def test_non_image_torch_model_to_int8_with_data_cli(tmp_path, capsys):
    pytest.importorskip("litert_torch")
    import numpy as np

    from tests.conftest import run_cli

    _, factory = _state_dict_model(tmp_path, MLP, "mlp")
    # keyed by the forward's argument name once every hop speaks the source's names (the name
    # map, converters/validation/names.py); before it, by the float TFLite's own name
    import importlib.util

    key = "x" if importlib.util.find_spec("converters.validation.names") else "args_0"
    np.savez(tmp_path / "calib.npz", **{key: np.random.RandomState(0).randn(16, 1, 16).astype("float32")})
    code, out, err = run_cli(capsys, "convert", tmp_path / "mlp.pt", "--torch-model", factory,
                             "--input-shape", "1", "16", "--to", "tflite-int8", "--data", tmp_path / "calib.npz",
                             "-o", tmp_path / "out", "--no-validate")
    assert code == 0, err
    assert "'model_state'" in err  # which checkpoint key held the weights
    made = tmp_path / "out" / "mlp_int8.tflite"
    assert formats.detect_format(str(made)) == formats.TFLITE_INT8


def test_lstm_state_dict_to_coreml_falls_back_to_torchscript(tmp_path):
    pytest.importorskip("coremltools")
    from converters.artefact import Artefact
    from converters.routes import torch as from_torch

    _, factory = _state_dict_model(tmp_path, LSTM, "lstmnet")
    said = []
    options = ConvertOptions(torch_model=factory, input_shape=(1, 5, 8), quiet=True)
    options.progress = said.append
    meta = from_torch.torch_to_coreml(Artefact(str(tmp_path / "lstmnet.pt"), formats.TORCH_MODULE, {}),
                                      str(tmp_path / "lstm.mlpackage"), options)
    assert os.path.isdir(tmp_path / "lstm.mlpackage")
    assert meta["route"].startswith("TorchScript")
    assert "lstm" in meta["route_fallback"]
    assert any("converting the TorchScript" in s and "lstm" in s for s in said), said
