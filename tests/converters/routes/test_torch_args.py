"""PyTorch conversions of forwards with several arguments.

TorchScript forward(x, y) and forward(x, sr: int), and a .pt2 with two inputs, are exported
to ONNX, TFLite and Core ML with one input per tensor named after its argument, the int
fixed by --arg; validation against the TorchScript/.pt2 source feeds both the same tensors
and values, and a wrong --arg value or swapped inputs fail it.
"""

import json

import numpy as np
import pytest

from tests.conftest import run_cli

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


class Two(torch.nn.Module):
    """forward(x, y): both [1, 8]; swapping them changes the result."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 4)
        self.b = torch.nn.Linear(8, 4)

    def forward(self, x, y):
        return torch.tanh(self.a(x)) * 2.0 - self.b(y)


class Rate(torch.nn.Module):
    """forward(x, sr: int): sr picks the branch and scales the input."""

    def __init__(self):
        super().__init__()
        self.l = torch.nn.Linear(8, 3)

    def forward(self, x, sr: int):
        if sr == 16000:
            return self.l(x)
        return self.l(x * (sr / 8000))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("torchargs")
    torch.manual_seed(0)
    two = Two().eval()
    torch.jit.script(two).save(str(d / "two.jit"))
    torch.jit.script(Rate().eval()).save(str(d / "rate.jit"))
    ex = (torch.rand(1, 8), torch.rand(1, 8))
    torch.export.save(torch.export.export(two, ex), str(d / "two.pt2"))
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.export.save(torch.export.export(two, (torch.rand(2, 8), torch.rand(2, 8)),
                                          dynamic_shapes={"x": {0: batch}, "y": {0: batch}}),
                      str(d / "two_open.pt2"))
    return d


def sidecar(path):
    return json.loads(open(f"{path}.edgeport.json").read())


def onnx_inputs(path):
    g = onnx.load(str(path)).graph
    return [(i.name, [d.dim_value for d in i.type.tensor_type.shape.dim]) for i in g.input]


TWO_SHAPES = ["--input-shapes", "x:[1,8]", "y:[1,8]"]


def test_two_tensor_torchscript_to_onnx_and_tflite(models, capsys):
    out = models / "two_out"
    code, o, err = run_cli(capsys, "convert", models / "two.jit", "--to", "onnx,tflite",
                           "--trust-pickle", "-o", out, *TWO_SHAPES)
    assert code == 0, o + err
    assert o.count("validation ok") == 2, o
    assert onnx_inputs(out / "two.onnx") == [("x", [1, 8]), ("y", [1, 8])]
    conv = sidecar(out / "two.onnx")["conversion"]
    assert conv["forward"] == "(x: Tensor, y: Tensor)"
    assert [i["name"] for i in conv["inputs"]] == ["x", "y"] and "fixed_arguments" not in conv
    # the TFLite model takes two inputs too, and validates against the TorchScript
    code, o, err = run_cli(capsys, "validate", models / "two.jit", out / "two_float.tflite",
                           "--trust-pickle", *TWO_SHAPES)
    assert code == 0 and "PASSED" in o, o + err


def test_swapped_inputs_fail_validation(models, capsys, tmp_path):
    out = models / "two_swap"
    code, o, err = run_cli(capsys, "convert", models / "two.jit", "--to", "onnx", "--no-validate",
                           "--trust-pickle", "-o", out, *TWO_SHAPES)
    assert code == 0, o + err
    m = onnx.load(str(out / "two.onnx"))
    names = {"x": "y", "y": "x"}
    for i in m.graph.input:
        i.name = names[i.name]
    for n in m.graph.node:
        n.input[:] = [names.get(t, t) for t in n.input]
    onnx.save(m, str(tmp_path / "swapped.onnx"))
    code, o, err = run_cli(capsys, "validate", models / "two.jit", tmp_path / "swapped.onnx",
                           "--trust-pickle", *TWO_SHAPES)
    assert code == 1 and "FAILED" in o, o + err
    code, o, err = run_cli(capsys, "validate", models / "two.jit", out / "two.onnx",
                           "--trust-pickle", *TWO_SHAPES)
    assert code == 0 and "PASSED" in o, o + err


def test_int_argument_fixed_by_arg(models, capsys):
    out = models / "rate_out"
    code, o, err = run_cli(capsys, "convert", models / "rate.jit", "--to", "onnx,ort,tflite",
                           "--trust-pickle", "-o", out, "--input-shapes", "x:[1,8]", "--arg", "sr=4000",
                           "--json")
    assert code == 0, o + err
    report = json.loads(o)
    arts = report["models"][0]["artefacts"] if "models" in report else report["artefacts"]
    assert all(a["validation"]["passed"] for a in arts), arts
    assert len(arts) == 3 and all(a["fixed_arguments"] == {"sr": 4000} for a in arts), arts
    assert onnx_inputs(out / "rate.onnx") == [("x", [1, 8])]
    assert sidecar(out / "rate.onnx")["fixed_arguments"] == {"sr": 4000}
    assert sidecar(out / "rate_float.tflite")["fixed_arguments"] == {"sr": 4000}
    # the same artefacts against the source run with another sr: caught
    for art in ("rate.onnx", "rate_float.tflite"):
        code, o, err = run_cli(capsys, "validate", models / "rate.jit", out / art, "--trust-pickle",
                               "--input-shapes", "x:[1,8]", "--arg", "sr=16000")
        assert code == 1 and "FAILED" in o, (art, o + err)
        code, o, err = run_cli(capsys, "validate", models / "rate.jit", out / art, "--trust-pickle",
                               "--input-shapes", "x:[1,8]", "--arg", "sr=4000")
        assert code == 0 and "PASSED" in o, (art, o + err)


def test_int_argument_branch_kept_by_value(models, capsys):
    """sr=16000 takes the other branch: the exported model computes l(x), not l(2x)."""
    out = models / "rate16"
    code, o, err = run_cli(capsys, "convert", models / "rate.jit", "--to", "onnx", "--trust-pickle",
                           "-o", out, "--input-shapes", "x:[1,8]", "--arg", "sr=16000")
    assert code == 0 and "validation ok" in o, o + err
    assert "forward(x: Tensor, sr: int) exported with sr=16000 fixed" in err
    assert "(sr=16000 fixed)" in o
    import onnxruntime as ort

    x = np.random.default_rng(1).uniform(-1, 1, (1, 8)).astype(np.float32)
    got = ort.InferenceSession(str(out / "rate.onnx")).run(None, {"x": x})[0]
    want = torch.jit.load(str(models / "rate.jit"))(torch.from_numpy(x), 16000).detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, torch.jit.load(str(models / "rate.jit"))(
        torch.from_numpy(x), 4000).detach().numpy(), atol=1e-3)


def test_missing_values_exit_2_naming_them(models, capsys):
    code, o, err = run_cli(capsys, "convert", models / "rate.jit", "--to", "onnx", "--trust-pickle",
                           "-o", models / "none", "--input-shapes", "x:[1,8]")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, o + err
    assert "argument 'sr' (int)" in errors[0] and "--arg sr=VALUE" in errors[0], errors
    code, o, err = run_cli(capsys, "convert", models / "two.jit", "--to", "onnx", "--trust-pickle",
                           "-o", models / "none", "--input-shapes", "x:[1,8]")
    assert code == 2 and "argument 'y'" in err and "--input-shapes y:" in err, o + err
    code, o, err = run_cli(capsys, "convert", models / "rate.jit", "--to", "onnx", "--trust-pickle",
                           "-o", models / "none", "--input-shapes", "x:[1,8]", "--arg", "rate=1")
    assert code == 2 and "no argument 'rate'" in err, o + err


def test_int8_refuses_several_tensors(models, capsys, tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    code, o, err = run_cli(capsys, "convert", models / "two.jit", "--to", "tflite-int8",
                           "--trust-pickle", "-o", models / "none", "--calibration", tmp_path,
                           *TWO_SHAPES)
    assert code == 2 and "takes 2 tensors (x, y)" in err, o + err


def test_pt2_with_two_inputs_to_onnx_and_coreml(models, capsys):
    out = models / "pt2_out"
    code, o, err = run_cli(capsys, "convert", models / "two.pt2", "--to", "onnx,coreml",
                           "--trust-pickle", "-o", out)
    assert code == 0 and o.count("validation ok") == 2, o + err
    assert "structure" not in o  # numbers compared (Core ML reference executor)
    assert onnx_inputs(out / "two.onnx") == [("x", [1, 8]), ("y", [1, 8])]


def test_pt2_open_dims_say_which_placeholder(models, capsys):
    out = models / "pt2_open"
    code, o, err = run_cli(capsys, "convert", models / "two_open.pt2", "--to", "onnx",
                           "--trust-pickle", "-o", out)
    assert code == 0, o + err
    assert "input 'x' [?,8] has open dimensions; exported it as [1, 8] (a placeholder)" in err
    assert sidecar(out / "two_open.onnx")["conversion"]["shape_notes"]
    code, o, err = run_cli(capsys, "convert", models / "two_open.pt2", "--to", "onnx", "--trust-pickle",
                           "-o", models / "pt2_user", "--input-shapes", "x:[3,8]", "y:[3,8]")
    assert code == 0 and "placeholder" not in err, o + err
    assert onnx_inputs(models / "pt2_user" / "two_open.onnx") == [("x", [3, 8]), ("y", [3, 8])]
