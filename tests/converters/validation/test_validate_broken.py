"""Broken conversions must fail `edgeport validate` (exit 1); usage and load errors exit 2."""

import os
from pathlib import Path

import numpy as np
import pytest

from edgeport.cli import main
from tests.converters.validation.test_validate_runners import (
    LABELS,
    SPEC,
    calibration_arrays,
    color_images,
    color_keras,
    tflite_from_keras,
    with_sidecar,
)

SHARED = Path(__file__).resolve().parents[4] / "shared"
CORAL = SHARED / "fixtures" / "coral"


def _two_heads(swap=False):
    import torch

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(6, 4)
            self.b = torch.nn.Linear(6, 4)

        def forward(self, x):
            a, b = self.a(x), self.b(x)
            return (b, a) if swap else (a, b)

    torch.manual_seed(0)
    return TwoHeads().eval()


def _feature_net():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()


@pytest.fixture(scope="session")
def broken(tmp_path_factory):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import torch

    d = tmp_path_factory.mktemp("broken")
    out = {"dir": d}
    # two outputs: the source, a swapped conversion, and a correct one listing them b, a
    x = torch.rand(1, 6)
    heads = _two_heads()
    torch.onnx.export(heads, (x,), str(d / "heads.onnx"), input_names=["x"],
                      output_names=["a", "b"], dynamo=False)
    torch.jit.trace(heads, x).save(str(d / "heads.torchscript.pt"))
    swapped = _two_heads(swap=True)
    torch.onnx.export(swapped, (x,), str(d / "heads_swapped.onnx"), input_names=["x"],
                      output_names=["a", "b"], dynamo=False)
    torch.onnx.export(swapped, (x,), str(d / "heads_reordered.onnx"), input_names=["x"],
                      output_names=["b", "a"], dynamo=False)
    # layout: an NCHW feature map, converted to NHWC correctly and by a plain reshape
    net = _feature_net()
    xi = torch.rand(1, 3, 8, 8)
    torch.jit.trace(net, xi).save(str(d / "feat.torchscript.pt"))

    class NHWC(torch.nn.Module):
        def __init__(self, wrong):
            super().__init__()
            self.net, self.wrong = net, wrong

        def forward(self, x):  # x: (1, 8, 8, 3)
            if self.wrong:
                return self.net(x.reshape(1, 3, 8, 8)).reshape(1, 8, 8, 4)
            return self.net(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    xh = torch.rand(1, 8, 8, 3)
    torch.onnx.export(NHWC(False), (xh,), str(d / "feat_nhwc.onnx"), input_names=["input"],
                      dynamo=False)
    torch.onnx.export(NHWC(True), (xh,), str(d / "feat_wrong_layout.onnx"),
                      input_names=["input"], dynamo=False)
    # Keras: perturbed weights, and int8 calibrated on the wrong range
    import keras

    keras.utils.set_random_seed(0)
    km = color_keras()
    km.save(str(d / "color.keras"))
    w, b = km.get_layer("logits").get_weights()
    pm = color_keras()
    pm.get_layer("logits").set_weights([w + np.float32(0.3) * (np.arange(9).reshape(3, 3) == 1), b])
    tflite_from_keras(pm, d / "color_perturbed.tflite")
    flat, _ = color_images(d / "images")
    cal = calibration_arrays(flat)
    tflite_from_keras(km, d / "color_int8.tflite", cal)
    tflite_from_keras(km, d / "color_int8_wrong_range.tflite", [c * np.float32(0.02) for c in cal])
    for name in ("color.keras", "color_perturbed.tflite", "color_int8.tflite",
                 "color_int8_wrong_range.tflite"):
        with_sidecar(d / name, preprocessing=SPEC, labels=LABELS)
    out["images"] = flat
    return out


def _validate(*args, capsys=None):
    code = main(["validate", *map(str, args)])
    text = capsys.readouterr() if capsys else None
    return code, text


def test_perturbed_weights_fail(broken, capsys):
    d = broken["dir"]
    code, text = _validate(d / "color.keras", d / "color_perturbed.tflite", capsys=capsys)
    assert code == 1, text.out
    assert "MISMATCH" in text.out and "elements exceed atol" in text.out


def test_swapped_outputs_fail_by_name_and_by_position(broken, capsys):
    d = broken["dir"]
    code, text = _validate(d / "heads.onnx", d / "heads_swapped.onnx", capsys=capsys)
    assert code == 1, text.out
    code, text = _validate(d / "heads.torchscript.pt", d / "heads_swapped.onnx", "--trust-pickle",
                           "--input-shape", 1, 6, capsys=capsys)
    assert code == 1, text.out
    # the same outputs in another order, named: matched by name, so it passes
    code, text = _validate(d / "heads.onnx", d / "heads_reordered.onnx", capsys=capsys)
    assert code == 0, text.out


def test_wrong_layout_fails_and_right_layout_passes(broken, capsys):
    d = broken["dir"]
    common = ["--trust-pickle", "--input-shape", 1, 3, 8, 8]
    code, text = _validate(d / "feat.torchscript.pt", d / "feat_nhwc.onnx", *common, capsys=capsys)
    assert code == 0, text.out
    assert "channels-last -> channels-first" in text.out
    code, text = _validate(d / "feat.torchscript.pt", d / "feat_wrong_layout.onnx", *common,
                           capsys=capsys)
    assert code == 1, text.out


def test_int8_calibrated_on_wrong_range_fails(broken, capsys):
    d = broken["dir"]
    code, text = _validate(d / "color.keras", d / "color_int8.tflite", "--inputs",
                           broken["images"], capsys=capsys)
    assert code == 0, text.out
    code, text = _validate(d / "color.keras", d / "color_int8_wrong_range.tflite", "--inputs",
                           broken["images"], capsys=capsys)
    assert code == 1, text.out
    assert "top-1 agreement" in text.out


def test_thresholds_are_settable(broken, capsys):
    d = broken["dir"]
    # a lenient enough tolerance lets the perturbed model through: the threshold is real
    code, text = _validate(d / "color.keras", d / "color_perturbed.tflite", "--atol", "1",
                           capsys=capsys)
    assert code == 0, text.out
    # int8 is close but never exact: demanding an exact output scale fails it
    code, text = _validate(d / "color.keras", d / "color_int8.tflite", "--inputs",
                           broken["images"], "--max-scale-error", "0", capsys=capsys)
    assert code == 1, text.out
    # a cosine above 1 cannot be met by any model: a usage error, not a validation failure
    code, text = _validate(d / "color.keras", d / "color_int8.tflite", "--min-cosine", "1.01",
                           capsys=capsys)
    assert code == 2 and "--min-cosine: '1.01' is out of range" in text.err


def test_usage_and_load_errors_exit_2(broken, tmp_path, capsys):
    d = broken["dir"]
    assert main(["validate", str(d / "color.keras"), str(tmp_path / "missing.onnx")]) == 2
    assert main(["validate", str(d / "heads.onnx"), str(d / "heads.onnx"),
                 "--check-stat", "average"]) == 2
    assert main(["validate", str(d / "heads.onnx"), str(d / "heads.onnx"), "--atol", "x:y"]) == 2
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07\x12\x04test" + b"\x00" * 40)
    assert main(["validate", str(d / "heads.onnx"), str(junk)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.skipif(not CORAL.is_dir(), reason=f"shared fixtures not found at {CORAL}")
def test_edgetpu_needs_tpu_or_saved_outputs(tmp_path, capsys):
    src = CORAL / "mobilenet_v1_0.25_128_quant.tflite"
    tpu = CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    from edge.interpreter import list_edge_tpus

    if list_edge_tpus():
        pytest.skip("an Edge TPU is attached: the compiled model runs for real")
    code = main(["validate", str(src), str(tpu), "--samples", "3"])
    text = capsys.readouterr()
    assert code == 2
    assert "Edge TPU" in text.out and "--load-outputs" in text.out

    # Outputs as a device would save them (`--save-outputs` next to a TPU). No TPU here, so
    # the file is written with the uncompiled model's outputs standing in for the device's.
    from converters.artefact import Artefact
    from converters.validation.data import DataSource, fingerprint
    from converters.validation.runners import runner_for
    from converters.validation.validate import save_outputs

    def device_file(path, seed, scale=1.0):
        r = runner_for(Artefact.open(str(src))).activate()
        metas = r.input_metadata()
        ds = DataSource(metas, [metas], None, None, 3, seed)
        samples = ds.samples()
        outs = [r.infer(ds.feed(s, metas)) for s in samples]
        from converters.validation.comparator import stack_samples

        stacked = stack_samples(outs)
        if scale != 1.0:  # a broken device result: scores scrambled
            stacked = {k: np.roll(v, 7, axis=-1) for k, v in stacked.items()}
        save_outputs(str(path), {str(tpu): (Artefact.open(str(tpu)), stacked)},
                     [fingerprint(s) for s in samples], ds.description, seed)

    good = tmp_path / "tpu.npz"
    device_file(good, seed=0)
    code = main(["validate", str(src), str(tpu), "--samples", "3", "--load-outputs", str(good)])
    text = capsys.readouterr()
    assert code == 0, text.out + text.err
    assert "outputs loaded:tpu.npz" in text.out
    # outputs saved for other inputs are refused
    code = main(["validate", str(src), str(tpu), "--samples", "3", "--seed", "5",
                 "--load-outputs", str(good)])
    text = capsys.readouterr()
    assert code == 2 and "other inputs" in text.out
    bad = tmp_path / "tpu_bad.npz"
    device_file(bad, seed=0, scale=-1)
    code = main(["validate", str(src), str(tpu), "--samples", "3", "--load-outputs", str(bad)])
    assert code == 1, capsys.readouterr().out


@pytest.mark.skipif(not CORAL.is_dir(), reason=f"shared fixtures not found at {CORAL}")
def test_validate_pair_without_tpu_is_not_validated_rather_than_failed():
    from converters.artefact import Artefact
    from converters.options import ConvertOptions
    from converters.validation.runners.tflite import EdgeTPUUnavailable
    from converters.validation.validate import validate_pair
    from edge.errors import MissingDependency
    from edge.interpreter import list_edge_tpus

    if list_edge_tpus():
        pytest.skip("an Edge TPU is attached")
    src = Artefact.open(str(CORAL / "mobilenet_v1_0.25_128_quant.tflite"))
    tpu = Artefact.open(str(CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"))
    with pytest.raises(EdgeTPUUnavailable) as e:
        validate_pair(src, tpu, ConvertOptions())
    assert isinstance(e.value, MissingDependency)  # convert reports the hop as not validated
    assert "--save-outputs" in str(e.value)
