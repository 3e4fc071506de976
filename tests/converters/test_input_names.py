"""One name per input across every hop: names follow the source (a TorchScript forward's
argument names), each artefact's sidecar maps its own input names to them, and every runner,
--input-shapes, --data and --val-range use that map; convert and validate agree."""

import json
import os

import numpy as np
import pytest

from converters.names import match_names
from converters.validation.names import apply_name_map
from tests.conftest import run_cli

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def test_match_by_name_then_decorations_then_position():
    assert match_names(["x", "y"], ["y", "x"]) == {"names": {"y": "y", "x": "x"}, "matched": "name"}
    assert match_names(["x", "mask"], ["serving_default_mask:0", "serving_default_x:0"])["names"] == {
        "serving_default_mask:0": "mask", "serving_default_x:0": "x"}
    assert match_names(["x"], ["image"]) == {"names": {"image": "x"}, "matched": "position"}
    assert match_names(["x", "y"], ["a"]) is None


def test_runner_speaks_the_source_names():
    from converters.validation.runners.base import Runner, tensor_meta

    class R(Runner):
        def _activate(self):
            pass

        def input_metadata(self):
            return [tensor_meta("serving_default_x:0", (1, 2), np.float32)]

        def _infer(self, feed):
            return {"y": feed["serving_default_x:0"] * 2}

    r = apply_name_map(R("m"), {"serving_default_x:0": "x"})
    assert [m.name for m in r.input_metadata()] == ["x"]
    assert r.infer({"x": np.ones((1, 2), np.float32)})["y"].tolist() == [[2.0, 2.0]]


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    """A traced TorchScript with two named tensor arguments, and --data keyed by them."""
    torch = pytest.importorskip("torch")

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.d = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, image, mask):
            return torch.relu(self.c(image)) + self.d(mask)

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("names")
    x = torch.zeros(1, 3, 16, 16)
    torch.jit.save(torch.jit.trace(M().eval(), (x, x)), d / "two.pt")
    rng = np.random.default_rng(0)
    np.savez(d / "calib.npz", image=rng.uniform(-1, 1, (16, 1, 3, 16, 16)).astype(np.float32),
             mask=rng.uniform(-1, 1, (16, 1, 3, 16, 16)).astype(np.float32))
    return d


NAMED = ("--input-shapes", "image:[1,3,16,16]", "mask:[1,3,16,16]", "--val-range", "image:[-1,1]",
         "mask:[-1,1]")


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_two_named_inputs_through_every_target(two_inputs, tmp_path, capsys):
    d = two_inputs
    code, out, err = run_cli(capsys, "convert", d / "two.pt", "--to", "onnx,ort,tflite,coreml,tflite-int8",
                             *NAMED, "--data", d / "calib.npz", "--trust-pickle", "-o", tmp_path,
                             "--json", "--quiet")
    assert code == 0, (out, err)
    arts = json.loads(out)["models"][0]["artefacts"]
    assert sorted(a["format"] for a in arts) == ["coreml", "onnx", "ort", "tflite", "tflite-int8"]
    for a in arts:
        assert a["validation"]["passed"] is True, a
        side = json.loads(open(a["model"] + ".edgeport.json").read())
        assert sorted(side["input_names"]["names"].values()) == ["image", "mask"], side["input_names"]
    # validate, given the same names, agrees with convert on every artefact
    for a in arts:
        code, out, err = run_cli(capsys, "validate", d / "two.pt", a["model"], *NAMED,
                                 "--data", d / "calib.npz", "--trust-pickle")
        assert code == 0, (a["model"], out, err)


def test_one_tensor_torchscript_keeps_its_argument_name(tmp_path, capsys):
    """forward(self, x): the source runner, the ONNX and the flags all call the input 'x'."""
    torch = pytest.importorskip("torch")

    class S(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.c(x))

    torch.jit.save(torch.jit.trace(S().eval(), (torch.zeros(1, 3, 16, 16),)), tmp_path / "one.pt")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).uniform(-1, 1, (4, 1, 3, 16, 16)).astype(np.float32))
    flags = ("--input-shapes", "x:[1,3,16,16]", "--val-range", "x:[-1,1]", "--trust-pickle")
    code, out, err = run_cli(capsys, "convert", tmp_path / "one.pt", "--to", "onnx,ort", *flags,
                             "-o", tmp_path / "out", "--json", "--quiet")
    assert code == 0, (out, err)
    for a in json.loads(out)["models"][0]["artefacts"]:
        assert a["validation"]["passed"] is True, a
    import onnx

    assert [i.name for i in onnx.load(str(tmp_path / "out" / "one.onnx")).graph.input] == ["x"]
    code, out, err = run_cli(capsys, "validate", tmp_path / "one.pt", tmp_path / "out" / "one.onnx",
                             *flags, "--data", tmp_path / "d.npz")
    assert code == 0, (out, err)
