"""Convert EfficientNet-Lite0 (ImageNet, PyTorch) by every PyTorch edge and measure each artefact.

For each of torch-module -> onnx, tflite, tflite-int8, coreml: conversion time, artefact
size, max abs difference of the logits against PyTorch, and top-1 agreement with PyTorch on
real photos, listed per image, on two sets:

  * held-out: images/holdout/*.jpg (127 photos from Debian packages, never used for
    calibration; see images/holdout/README.md for the inclusion rule);
  * calibration: images/*.jpg (the 20 photos int8 is calibrated on) plus the Coral
    fixtures' three .bmp photos when ../shared is present.

The int8 model is measured with the default AdaRound-style weight rounding and without it
(`adaround=False`), and without AdaRound and bias correction.

    python scripts/measure_efficientnet.py [--out DIR] [--json FILE]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))


def holdout_photos():
    """Held-out photos (images/holdout/*.jpg): calibration reads only the top level of images/."""
    return sorted((REPO / "images" / "holdout").glob("*.jpg"))


def photos():
    """Calibration-set photos: images/*.jpg, then the Coral fixtures' .bmp photos when present."""
    files = sorted((REPO / "images").glob("*.jpg"))
    coral = SHARED / "fixtures" / "coral"
    if coral.is_dir():
        files += sorted(coral.glob("*.bmp"))
    return files


def pytorch_reference(files):
    """(model, {file: logits}) with the reference preprocessing (NCHW)."""
    import torch

    from converters.quantize.calibration import preprocess_image, resolve_spec
    from converters.reference_models import EFFICIENTNET_LITE0_PREPROCESSING, efficientnet_lite0

    model = efficientnet_lite0()
    spec = resolve_spec(EFFICIENTNET_LITE0_PREPROCESSING)
    out = {}
    with torch.no_grad():
        for f in files:
            out[f] = model(torch.from_numpy(preprocess_image(str(f), spec))).numpy()[0]
    return model, out


def run_tflite(path, files):
    from ai_edge_litert.interpreter import Interpreter

    from converters.quantize.calibration import preprocess_image, resolve_spec
    from converters.reference_models import EFFICIENTNET_LITE0_PREPROCESSING
    from edge.tensors import invoke_float

    spec = resolve_spec(dict(EFFICIENTNET_LITE0_PREPROCESSING, layout="NHWC"))
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    return {f: invoke_float(it, preprocess_image(str(f), spec))[0][0] for f in files}


def run_onnx(path, files):
    from converters.quantize.calibration import preprocess_image, resolve_spec
    from converters.reference_models import EFFICIENTNET_LITE0_PREPROCESSING

    spec = resolve_spec(EFFICIENTNET_LITE0_PREPROCESSING)
    from edge.ort import ort_session

    sess = ort_session(path, log_level=None)
    name = sess.get_inputs()[0].name
    return {f: sess.run(None, {name: preprocess_image(str(f), spec)})[0][0] for f in files}


def imagenet_labels():
    """The 1000 ImageNet class names, index = class (labels/imagenet_labels.txt)."""
    from edge.labels import read_labels

    found = read_labels(str(REPO / "labels" / "imagenet_labels.txt"))
    return [found.get(i, str(i)) for i in range(1000)]


def compare(ref, got, labels):
    """Max abs diff, top-1 agreement, top-2 containment and a row per photo."""
    rows, agree, in_top2, diff = [], 0, 0, 0.0
    for f, r in ref.items():
        g = got[f]
        diff = max(diff, float(np.abs(g - r).max()))
        rt, gt = int(r.argmax()), int(g.argmax())
        order = np.argsort(r)[::-1]
        agree += rt == gt
        in_top2 += gt in order[:2]
        rows.append({"image": f.name, "pytorch": labels[rt], "artefact": labels[gt], "same": rt == gt,
                     "pytorch_margin": round(float(r[order[0]] - r[order[1]]), 3)})
    return {"max_abs_diff": diff, "top1_agree": agree, "top2_contains": in_top2, "n": len(ref),
            "rows": rows}


def convert(fn, weights, out_path, options):
    from converters import formats
    from converters.artefact import Artefact, size_of

    src = Artefact(weights, formats.TORCH_MODULE, {})
    t = time.monotonic()
    meta = fn(src, str(out_path), options)
    return time.monotonic() - t, size_of(str(out_path)), meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for the artefacts (default: a temp folder)")
    ap.add_argument("--no-bias-correction-run", action="store_true",
                    help="skip the int8 run without AdaRound and bias correction (for comparison)")
    ap.add_argument("--json", help="write the measurements to this JSON file")
    args = ap.parse_args(argv)

    from converters.options import ConvertOptions
    from converters.reference_models import EFFICIENTNET_LITE0_PREPROCESSING, efficientnet_lite0_weights
    from converters.routes import torch as from_torch

    labels = imagenet_labels()
    sets = {"held-out": holdout_photos(), "calibration": photos()}
    files = [f for fs in sets.values() for f in fs]
    weights = efficientnet_lite0_weights()
    out = Path(args.out or tempfile.mkdtemp(prefix="effnet-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"EfficientNet-Lite0 on {len(files)} photos: {len(sets['held-out'])} held out "
          f"(images/holdout/), {len(sets['calibration'])} in the calibration set "
          f"(images/*.jpg + Coral .bmp)")
    _, ref = pytorch_reference(files)

    def opts(**kw):
        base = dict(torch_model="converters.reference_models:efficientnet_lite0",
                    preprocessing=dict(EFFICIENTNET_LITE0_PREPROCESSING), quiet=True,
                    calibration=str(REPO / "images"))
        base.update(kw)
        return ConvertOptions(**base)

    results = {}

    def record(name, seconds, size, meta, got):
        res = {"seconds": round(seconds, 1), "size": size}
        for k in ("ops", "calibration", "bias_correction", "adaround", "opset", "io_dtype"):
            if meta.get(k) is not None:
                res[k] = meta[k]
        results[name] = res
        line = f"{name:28s} {seconds:6.1f} s  {size / 1e6:6.2f} MB"
        if got is None:
            res["note"] = "Core ML runs only on macOS: structure checked, numbers not compared here"
            print(line, flush=True)
            return
        res["photos"] = {k: compare({f: ref[f] for f in fs}, got, labels) for k, fs in sets.items()}
        res["max_abs_diff"] = max(c["max_abs_diff"] for c in res["photos"].values())
        print(line + f"  max|diff| {res['max_abs_diff']:.3g}  top-1 "
              + ", ".join(f"{c['top1_agree']}/{c['n']} {k}" for k, c in res["photos"].items()), flush=True)
        for k, c in res["photos"].items():
            for r in c["rows"]:
                if not r["same"]:
                    print(f"    differs on {r['image']} ({k}): PyTorch {r['pytorch']!r} "
                          f"(margin {r['pytorch_margin']} logits) vs {r['artefact']!r}")

    s, n, m = convert(from_torch.torch_to_onnx, weights, out / "effnet.onnx", opts())
    record("onnx", s, n, m, run_onnx(out / "effnet.onnx", files))
    s, n, m = convert(from_torch.torch_to_tflite, weights, out / "effnet_float.tflite", opts())
    record("tflite (float)", s, n, m, run_tflite(out / "effnet_float.tflite", files))
    s, n, m = convert(from_torch.torch_to_tflite_int8, weights, out / "effnet_int8.tflite", opts())
    record("tflite-int8 (uint8 I/O)", s, n, m, run_tflite(out / "effnet_int8.tflite", files))
    print(f"    int8 ops: {m['ops']}")
    print(f"    calibration: {m['calibration']['count']} photos from {m['calibration']['source']} "
          "(the calibration set's images/*.jpg; no held-out photo)")
    if meta_ada := m.get("adaround"):
        print(f"    AdaRound: {meta_ada}")
    s, n, m = convert(from_torch.torch_to_tflite_int8, weights, out / "effnet_int8_noada.tflite",
                      opts(adaround=False))
    record("tflite-int8, no AdaRound", s, n, m, run_tflite(out / "effnet_int8_noada.tflite", files))
    if not args.no_bias_correction_run:
        s, n, m = convert(from_torch.torch_to_tflite_int8, weights, out / "effnet_int8_nobc.tflite",
                          opts(bias_correction=False, adaround=False))
        record("tflite-int8, no AdaRound/bias c.", s, n, m,
               run_tflite(out / "effnet_int8_nobc.tflite", files))
    s, n, m = convert(from_torch.torch_to_coreml, weights, out / "effnet.mlpackage",
                      opts(labels=str(REPO / "labels" / "imagenet_labels.txt")))
    record("coreml (mlprogram)", s, n, m, None)
    print(f"artefacts in {out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return results


if __name__ == "__main__":
    main()
