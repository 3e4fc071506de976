"""Measure the float-TFLite and ONNX routes on EfficientNet-Lite0 (numbers for docs/benchmarks.md).

    python scripts/measure_routes.py --work /tmp/routes [--onnx M.onnx --tflite M_float.tflite]

Without --onnx/--tflite the reference ONNX and float TFLite are made from the PyTorch
weights in the `models` extra (torch route). They are copied into --work WITHOUT their
sidecars, so each route sees them as a foreign model does (preprocessing from the flags).

Measured (each conversion through `pipeline.convert_model`, like `edgeport convert`):
  1. float TFLite -> int8 (bias correction + TFLite calibrator, on images/): top-1 agreement
     with the float model on images/holdout/ (issue: >= 97%).
  2. ONNX -> TFLite float (onnx2tf in its toolenv): max abs difference from ONNX Runtime on
     images/holdout/ (issue: <= 1e-4).
  3. ONNX -> int8 TFLite (onnx -> tflite -> tflite-int8): top-1 agreement with ONNX Runtime on
     images/holdout/ (issue: >= 95%).
  4. ONNX -> Core ML (onnx2coreml): converts, with metadata and labels.
and beside each route's time, the upstream tool run by hand on the same model: TFLite's
calibrator alone, the onnx2tf command line in its environment, onnx2coreml.convert().
Prints one JSON object; times are wall-clock seconds on a shared machine (compare ratios).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MEAN, STD = [127.0], [128.0]


def cpu_seconds():
    """CPU time of this process and its finished children (onnx2tf runs as a child): a
    measure the other jobs of a shared machine disturb far less than wall-clock time."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def reference_models(work):
    from converters import pipeline
    from converters.options import ConvertOptions
    from converters.reference_models import EFFICIENTNET_LITE0_PREPROCESSING, efficientnet_lite0_weights

    ref = os.path.join(work, "ref")
    os.makedirs(ref, exist_ok=True)
    pth = os.path.join(ref, "efficientnet_lite0.pth")
    shutil.copyfile(efficientnet_lite0_weights(), pth)
    opts = ConvertOptions(torch_model="converters.reference_models:efficientnet_lite0",
                          input_shape=(1, 3, 224, 224), preprocessing=dict(EFFICIENTNET_LITE0_PREPROCESSING),
                          quiet=True)
    pipeline.convert_model(pth, ["onnx", "tflite"], opts, outdir=ref, validate=False)
    return os.path.join(ref, "efficientnet_lite0.onnx"), os.path.join(ref, "efficientnet_lite0_float.tflite")


def holdout_compare(source, converted, holdout):
    """validate() of converted against source on every holdout photo -> dict of numbers."""
    from converters.artefact import Artefact
    from converters.validation.data import image_files
    from converters.validation.validate import ValidateOptions, validate

    files = image_files(holdout)
    vo = ValidateOptions(inputs=holdout, samples=len(files), preprocessing={"mean": MEAN, "std": STD})
    rep = validate(Artefact.open(source), [Artefact.open(converted)], vo)
    res = rep.results[0]
    o = res.comparison.outputs[0]
    return {"samples": o.samples, "top1_agree": o.top1_agree,
            "top1_agreement": round(o.top1_agree / o.samples, 4) if o.top1_agree is not None else None,
            "max_abs": o.max_abs, "mean_abs": o.mean_abs, "cosine": round(o.cosine, 6),
            "passed": res.passed, "summary": res.summary_line()}


def convert(src, targets, outdir, images, labels=None, validate=True):
    from converters import pipeline
    from converters.options import ConvertOptions

    opts = ConvertOptions(preprocessing={"mean": MEAN, "std": STD}, calibration=images,
                          calibration_count=100, labels=labels, quiet=True,
                          description="EfficientNet-Lite0 (ImageNet)", author="edgeport")
    c = cpu_seconds()
    r = pipeline.convert_model(src, targets, opts, outdir=outdir, force=True, validate=validate)
    return r, cpu_seconds() - c


def by_hand_calibrator(float_tflite, images):
    """TFLite's calibrator alone (what the route wraps), same images, no bias correction."""
    from converters.quantize.calibration import load_calibration
    from converters.quantize.tflite_int8 import quantize_tflite

    cal = load_calibration(images, {"mean": MEAN, "std": STD, "layout": "NHWC"}, count=100,
                           input_shape=(1, 224, 224, 3))
    with open(float_tflite, "rb") as f:
        data = f.read()
    t, c = time.monotonic(), cpu_seconds()
    quantize_tflite(data, cal, "uint8", lambda m: None)
    return time.monotonic() - t, cpu_seconds() - c


def by_hand_onnx2tf(onnx_path, work, images):
    from converters import toolenv
    from converters.routes.onnx2tf import SAMPLE_FILE, sample_images

    env = toolenv.ensure("onnx2tf", say)
    d = os.path.join(work, "byhand_onnx2tf")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    sample_images([images], os.path.join(d, SAMPLE_FILE))
    shutil.copyfile(onnx_path, os.path.join(d, "m.onnx"))
    environ = dict(os.environ, PATH=env.bin + os.pathsep + os.environ["PATH"])
    environ.pop("PYTHONPATH", None)
    t, c = time.monotonic(), cpu_seconds()
    subprocess.run([os.path.join(env.bin, "onnx2tf"), "-i", "m.onnx", "-o", "out", "-coion", "-n"],
                   cwd=d, env=environ, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t, cpu_seconds() - c


def by_hand_onnx2coreml(onnx_path, work):
    import onnx2coreml

    t, c = time.monotonic(), cpu_seconds()
    m = onnx2coreml.convert(onnx_path)
    m.save(os.path.join(work, "byhand.mlpackage"))
    return time.monotonic() - t, cpu_seconds() - c


def coreml_facts(path):
    import coremltools as ct

    spec = ct.models.MLModel(path, skip_model_load=True).get_spec()
    d = spec.description
    return {"type": spec.WhichOneof("Type"), "input": d.input[0].type.WhichOneof("Type"),
            "classifier": d.predictedFeatureName == "classLabel",
            "author": d.metadata.author, "description": d.metadata.shortDescription,
            "provenance": "edgeport_provenance" in d.metadata.userDefined}


def timing(a, onnx_src, tfl_src):
    """Each new route (no validation) beside the upstream tool run by hand, same model, one
    after the other, frameworks imported first: wall-clock and CPU seconds."""
    import coremltools  # noqa: F401
    import onnx2coreml  # noqa: F401  (warm imports: neither side pays them)
    import tensorflow  # noqa: F401

    rows = {}
    d = os.path.join(a.work, "timing")
    for key, src, target, by_hand in (
            ("tflite -> tflite-int8", tfl_src, "tflite-int8", lambda: by_hand_calibrator(tfl_src, a.images)),
            ("onnx -> tflite", onnx_src, "tflite", lambda: by_hand_onnx2tf(onnx_src, a.work, a.images)),
            ("onnx -> coreml", onnx_src, "coreml", lambda: by_hand_onnx2coreml(onnx_src, a.work))):
        t = time.monotonic()
        r, cpu = convert(src, [target], d, a.images, labels=a.labels if target == "coreml" else None,
                         validate=False)
        wall = time.monotonic() - t
        hw, hc = by_hand()
        rows[key] = {"route_wall_s": round(wall, 1), "route_cpu_s": round(cpu, 1),
                     "by_hand_wall_s": round(hw, 1), "by_hand_cpu_s": round(hc, 1)}
        say(f"{key}: {json.dumps(rows[key])}")
    return rows


def float_tflite_corpus(specs, work, images, holdout):
    """Each PATH:MEAN:STD float TFLite quantized on `images`, validated against the float model
    on `holdout`, and its Edge TPU mapping predicted (no compiler needed)."""
    from converters import pipeline
    from converters.edgetpu.analyzer import predict_mapping
    from converters.options import ConvertOptions

    rows = []
    for spec in specs:
        path, mean, std = spec.rsplit(":", 2)
        name = os.path.basename(path)
        d = os.path.join(work, "corpus", os.path.splitext(name)[0])
        os.makedirs(d, exist_ok=True)
        src = shutil.copyfile(path, os.path.join(d, name))
        row = {"model": name, "mean": float(mean), "std": float(std)}
        opts = ConvertOptions(preprocessing={"mean": [float(mean)], "std": [float(std)]},
                              calibration=images, calibration_count=100, quiet=True)
        try:
            r = pipeline.convert_model(src, ["tflite-int8"], opts, outdir=d, force=True)
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            say(json.dumps(row))
            continue
        q = r.hops[0]["path"]
        with open(q + ".edgeport.json") as fh:
            conv = json.load(fh)["conversion"]
        from converters.artefact import Artefact
        from converters.validation.data import image_files
        from converters.validation.validate import ValidateOptions, validate

        vo = ValidateOptions(inputs=holdout, samples=len(image_files(holdout)),
                             preprocessing={"mean": [float(mean)], "std": [float(std)]})
        rep = validate(Artefact.open(src), [Artefact.open(q)], vo)
        pred = predict_mapping(q)
        row.update(seconds=round(r.hops[0]["seconds"], 1), float16_folded=conv.get("float16_weights_folded"),
                   bias_corrected=(conv.get("bias_correction") or {}).get("ops"),
                   validation_calibration=r.hops[0]["validation"]["summary"],
                   validation_holdout=rep.results[0].summary_line(), passed=rep.passed,
                   edgetpu_mapped=pred["mapped"], edgetpu_total=pred["total"],
                   edgetpu_fraction=round(pred["mapped"] / pred["total"], 3),
                   cpu_ops=sorted(set(pred["cpu_ops"])))
        rows.append(row)
        say(json.dumps(row))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--onnx")
    ap.add_argument("--tflite")
    ap.add_argument("--images", default=os.path.join(REPO, "images"))
    ap.add_argument("--holdout", default=os.path.join(REPO, "images", "holdout"))
    ap.add_argument("--labels", default=os.path.join(REPO, "labels", "imagenet_labels.txt"))
    ap.add_argument("--only", nargs="+",
                    choices=["tflite-int8", "onnx-tflite", "onnx-int8", "onnx-coreml", "timing"])
    ap.add_argument("--float-tflite", nargs="+", metavar="PATH:MEAN:STD", default=[],
                    help="more float TFLite models to quantize on --images and map (e.g. MediaPipe's)")
    a = ap.parse_args(argv)
    os.makedirs(a.work, exist_ok=True)
    if a.float_tflite and not a.only:
        print(json.dumps({"float_tflite_corpus": float_tflite_corpus(a.float_tflite, a.work, a.images,
                                                                     a.holdout)}, indent=2, default=float))
        return 0
    onnx_ref, tflite_ref = a.onnx, a.tflite
    if not (onnx_ref and tflite_ref):
        say("making the reference ONNX and float TFLite from the PyTorch weights")
        onnx_ref, tflite_ref = reference_models(a.work)
    src = os.path.join(a.work, "src")
    os.makedirs(src, exist_ok=True)
    onnx_src = shutil.copyfile(onnx_ref, os.path.join(src, "efficientnet_lite0.onnx"))
    tfl_src = shutil.copyfile(tflite_ref, os.path.join(src, "efficientnet_lite0.tflite"))
    only = set(a.only or ["tflite-int8", "onnx-tflite", "onnx-int8", "onnx-coreml", "timing"])
    out = {}
    if "timing" in only:
        out["timing"] = timing(a, onnx_src, tfl_src)

    if "tflite-int8" in only:
        say("1. float TFLite -> int8")
        d = os.path.join(a.work, "tflite_int8")
        r, sec = convert(tfl_src, ["tflite-int8"], d, a.images)
        q = os.path.join(d, "efficientnet_lite0_int8.tflite")
        out["tflite_to_int8"] = {"route": r.routes["tflite-int8"], "seconds_route": round(r.hops[0]["seconds"], 1),
                                 "validation": r.hops[0]["validation"]["summary"],
                                 "holdout_vs_float": holdout_compare(tfl_src, q, a.holdout)}
        say(json.dumps(out["tflite_to_int8"]))
    if only & {"onnx-tflite", "onnx-int8"}:
        say("2/3. ONNX -> TFLite float -> int8")
        d = os.path.join(a.work, "onnx_tflite")
        targets = ["tflite"] + (["tflite-int8"] if "onnx-int8" in only else [])
        r, sec = convert(onnx_src, targets, d, a.images)
        hops = {h["format"]: h for h in r.hops}
        f = os.path.join(d, "efficientnet_lite0_float.tflite")
        out["onnx_to_tflite"] = {"route": r.routes["tflite"], "seconds_route": round(hops["tflite"]["seconds"], 1),
                                 "validation": hops["tflite"]["validation"]["summary"],
                                 "holdout_vs_onnxruntime": holdout_compare(onnx_src, f, a.holdout)}
        say(json.dumps(out["onnx_to_tflite"]))
        if "onnx-int8" in only:
            q = os.path.join(d, "efficientnet_lite0_int8.tflite")
            out["onnx_to_int8"] = {"route": r.routes["tflite-int8"],
                                   "seconds_route": round(sum(h["seconds"] for h in r.hops), 1),
                                   "validation": hops["tflite-int8"]["validation"]["summary"],
                                   "holdout_vs_onnxruntime": holdout_compare(onnx_src, q, a.holdout)}
            say(json.dumps(out["onnx_to_int8"]))
    if "onnx-coreml" in only:
        say("4. ONNX -> Core ML")
        d = os.path.join(a.work, "onnx_coreml")
        r, sec = convert(onnx_src, ["coreml"], d, None, labels=a.labels)
        m = os.path.join(d, "efficientnet_lite0.mlpackage")
        facts = coreml_facts(m)
        with open(m + ".edgeport.json") as fh:
            side = json.load(fh)
        facts["labels"] = len(side.get("labels") or [])
        out["onnx_to_coreml"] = {"route": r.routes["coreml"], "seconds_route": round(r.hops[0]["seconds"], 1),
                                 "validation": r.hops[0]["validation"]["summary"], "model": facts}
        say(json.dumps(out["onnx_to_coreml"]))
    print(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
