"""AdaRound-style weight rounding of the PyTorch -> full-int8 TFLite route, on a tiny CNN.

The rounding is chosen in PyTorch on TFLite's own int8 grid (per output channel, scale =
max|w| / 127, narrow range), so TensorFlow's quantizer must reproduce the chosen integers
exactly: checked here by reading every int8 weight of the produced model.
"""

import copy
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("tensorflow")

from converters import formats
from converters.artefact import Artefact  # noqa: E402
from converters.options import ConvertOptions  # noqa: E402
from converters.routes import torch as from_torch  # noqa: E402
from edge.tflite_model import TFLiteModel  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
IMAGES = REPO / "images"
SHAPE = (1, 3, 32, 32)
SPEC = {"mean": [127.5], "std": [127.5]}
COUNT = 6

NET = textwrap.dedent('''
    import torch
    import torch.nn.functional as F

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
            self.b1 = torch.nn.BatchNorm2d(16)
            self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.pw = torch.nn.Conv2d(16, 24, 1)
            self.fc = torch.nn.Linear(24, 7)

        def forward(self, x):
            x = F.relu6(self.b1(self.c1(x)))
            x = F.relu6(self.dw(x))
            x = F.relu6(self.pw(x))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def build():
        return Net()
''')


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    if not IMAGES.is_dir():
        pytest.skip(f"{IMAGES} (the bundled photos) is missing")
    d = tmp_path_factory.mktemp("adaround")
    (d / "net.py").write_text(NET)
    from converters.routes.torch_loading import import_factory

    torch.manual_seed(0)
    model = import_factory(f"{d / 'net.py'}:build")().eval()
    with torch.no_grad():
        model.b1.running_mean.uniform_(-0.5, 0.5)
        model.b1.running_var.uniform_(0.5, 2.0)
        model.b1.weight.uniform_(-1.5, 1.5)   # negative BN factors flip a channel's sign
    torch.save(model.state_dict(), d / "weights.pt")
    return {"dir": d, "model": model, "factory": f"{d / 'net.py'}:build"}


def _options(net, **kw):
    return ConvertOptions(input_shape=SHAPE, preprocessing=dict(SPEC), quiet=True,
                          torch_model=net["factory"], calibration=str(IMAGES),
                          calibration_count=COUNT, **kw)


def _int8_weights(path):
    """{op kind: [(int8 weights, scales, quantized_dimension)]} in graph order."""
    model = TFLiteModel.load(path)
    g = model.main
    out = {}
    for op in g.operators:
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            t = g.tensors[op.inputs[1]]
            assert t.dtype == "INT8"
            q = np.frombuffer(model.buffer_data(t.buffer), np.int8).reshape(t.shape)
            out.setdefault(op.opcode, []).append((q, np.array(t.quantization.scale),
                                                  t.quantization.quantized_dimension))
    return out


def _calibration_nchw():
    from converters.quantize.calibration import load_calibration

    cal = load_calibration(str(IMAGES), dict(SPEC, size=[32, 32], layout="NHWC"), count=COUNT,
                           input_shape=[1, 32, 32, 3], layout="NHWC")
    return [torch.from_numpy(a).permute(0, 3, 1, 2).contiguous() for a in cal.arrays()]


@pytest.fixture(scope="module")
def converted(net, tmp_path_factory):
    out = tmp_path_factory.mktemp("ada_int8")
    src = Artefact(str(net["dir"] / "weights.pt"), formats.TORCH_MODULE, {})
    res = {}
    for flag in (True, False):
        path = out / f"net_{flag}.tflite"
        meta = from_torch.torch_to_tflite_int8(src, str(path), _options(net, adaround=flag))
        res[flag] = (path, meta)
    return res


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_adaround_is_on_by_default_and_recorded(net, converted):
    path, meta = converted[True]
    assert formats.detect_format(path) == formats.TFLITE_INT8
    ada = meta["adaround"]
    assert ada["layers"] == 4 and ada["skipped"] == 0 and ada["adarounded"] == 4
    assert ada["images"] == COUNT
    # the layer objective: AdaRound's output error is below nearest rounding's
    assert ada["mean_output_error_vs_nearest"] < 1.0
    assert converted[False][1]["adaround"] is None


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_tflite_int8_weights_are_exactly_the_chosen_integers(net, converted):
    """Run adaround() on the same model and images; TF's quantizer must keep every integer."""
    model = copy.deepcopy(net["model"])
    float_w = {n: m.weight.detach().clone() for n, m in model.named_children() if hasattr(m, "weight")}
    summary = from_torch.adaround(model, _calibration_nchw())
    assert summary["layers"] == 4
    q = {}
    differs = 0
    for name in ("c1", "dw", "pw", "fc"):
        w = getattr(model, name).weight.detach()
        w2 = w.reshape(w.shape[0], -1)
        scale = w2.abs().amax(1, keepdim=True) / 127
        qi = w2 / scale
        # on the grid, and each channel keeps its max |w| at 127 * scale (the scale is unchanged)
        assert torch.allclose(qi, qi.round(), atol=1e-3), name
        assert torch.equal(qi.abs().amax(1).round(), torch.full((w.shape[0],), 127.0))
        f = float_w[name].reshape(w.shape[0], -1)
        assert torch.allclose(scale[:, 0], f.abs().amax(1) / 127)
        nearest = (f / scale).round()
        assert ((qi.round() - f / scale).abs() < 1).all(), name       # only down or up
        differs += int((qi.round() != nearest).sum())
        q[name] = qi.round().reshape(w.shape).to(torch.int64).numpy()
    assert differs > 0, "AdaRound chose nearest rounding for every weight"

    got = _int8_weights(converted[True][0])
    (c1, _, qd1), (pw, _, qdp) = got["CONV_2D"]
    (dw, _, qdd), = got["DEPTHWISE_CONV_2D"]
    (fc, _, qdf), = got["FULLY_CONNECTED"]
    assert (qd1, qdp, qdd, qdf) == (0, 0, 3, 0)   # per output channel everywhere
    # c1 has BatchNorm folded in (a factor per channel, some negative): same integers up to sign
    bn = net["model"].b1
    sign = np.sign((bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy())
    np.testing.assert_array_equal(c1, sign[:, None, None, None] * q["c1"].transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(dw, q["dw"].transpose(1, 2, 3, 0))      # (1, kh, kw, C)
    np.testing.assert_array_equal(pw, q["pw"].transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(fc, q["fc"])
    # without AdaRound the same layers are nearest-rounded, so the models differ
    plain = _int8_weights(converted[False][0])
    assert any(not np.array_equal(a[0], b[0]) for k in got for a, b in zip(got[k], plain[k]))
