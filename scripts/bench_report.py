"""Write docs/benchmarks.md and docs/benchmarks.png: every reference artefact on this CPU.

    python scripts/bench_report.py [--runs 50]      # after scripts/build_models.py

For each artefact in models/manifest.json: size, runtime, load time, first inference, then
median / p90 / p99 latency at 1 and 2 threads (edge.bench, the same code as `edgeport bench`),
and top-1 agreement with PyTorch on images/ (from the manifest's validation). Dated, with the
machine described. Core ML cannot run off macOS and the Edge TPU model needs a compiler and a
TPU: their rows say so instead of showing numbers.
"""
import argparse
import datetime
import json
import os
import platform
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

RUNNABLE = ("onnx", "ort", "tflite", "tflite-int8", "edgetpu")


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or cpu
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()} {platform.machine()}"


def versions():
    from converters.artefact import package_versions

    v = package_versions("numpy", "ai-edge-litert", "onnxruntime", "torch", "tensorflow-cpu", "coremltools")
    return ", ".join(f"{k} {x}" for k, x in v.items()) + f", Python {platform.python_version()}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default=os.path.join(REPO, "models", "manifest.json"))
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "benchmarks.md"))
    args = ap.parse_args(argv)

    from edge.bench import benchmark, plot

    if not os.path.exists(args.manifest):
        print(f"error: {args.manifest} not found: run scripts/build_models.py first", file=sys.stderr)
        return 2
    with open(args.manifest) as f:
        manifest = json.load(f)

    rows, results = [], []
    for a in manifest["artefacts"]:
        path = os.path.join(REPO, a["path"])
        v = a.get("validation_vs_pytorch") or {}
        h = a.get("validation_vs_pytorch_holdout") or {}
        agreement = v.get("summary", "-") + (f"; held out: {h['summary']}"
                                             if h and h.get("summary") != v.get("summary") else "")
        if a["format"] not in RUNNABLE:
            rows.append((a, None, None, agreement, "not run: Core ML prediction needs macOS"
                         if a["format"] == "coreml" else "not run"))
            continue
        per_thread = []
        for threads in (1, 2):
            print(f"benchmarking {a['path']} threads={threads}", file=sys.stderr)
            r = benchmark(path, runs=args.runs, warmup=args.warmup, threads=threads, device="cpu")
            results.append(r)
            per_thread.append(r)
        rows.append((a, per_thread[0], per_thread[1], agreement, ""))
    for s in manifest.get("skipped", []):
        rows.append(({"path": f"models/efficientnet_lite0_{s['format']}.tflite", "format": s["format"],
                      "size": None}, None, None, "-", f"not built: {s['reason'].split(' (')[0]}"))

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    png = os.path.splitext(args.out)[0] + ".png"
    plot(results, png)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks: EfficientNet-Lite0 on this machine's CPU", "",
        f"Generated {now} by `python scripts/bench_report.py` (after `python scripts/build_models.py`).",
        f"Machine: {machine()}.", f"Software: {versions()}.", "",
        f"Latency: {args.runs} timed runs after {args.warmup} warm-up runs on seeded random inputs, "
        "per model and thread count, with `edge.bench` (the code behind `edgeport bench`). "
        "Load = interpreter/session creation; first = the first inference. Times in ms. "
        "Top-1 agreement: each artefact against PyTorch on the photos in `images/` (the int8 "
        "calibration photos), then on `images/holdout/` (photos calibration never saw), from "
        "`models/manifest.json`. This machine is shared and noisy: compare rows of one "
        "report, not reports of different days.", "",
        "| artefact | format | size (MB) | runtime | load | first | median 1t | p90 1t | p99 1t "
        "| median 2t | p90 2t | p99 2t | agreement with PyTorch |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for a, r1, r2, agreement, note in rows:
        size = f"{a['size'] / 1e6:.2f}" if a.get("size") else "-"
        name = os.path.basename(a["path"])
        if r1 is None:
            lines.append(f"| {name} | {a['format']} | {size} | {note} | | | | | | | | | {agreement} |")
            continue
        lines.append(
            f"| {name} | {a['format']} | {size} | {r1['runtime']} | {r1['load_ms']:.1f} | "
            f"{r1['first_inference_ms']:.1f} | {r1['median_ms']:.2f} | {r1['p90_ms']:.2f} | "
            f"{r1['p99_ms']:.2f} | {r2['median_ms']:.2f} | {r2['p90_ms']:.2f} | {r2['p99_ms']:.2f} | "
            f"{agreement} |")
    lines += [
        "", "Notes:", "",
        "- The ORT artefact is built portable (no `--target-platform`), so ONNX Runtime's x86-only "
        "layout optimizations (NCHWc) are not baked in and it runs slower here than the .onnx, which "
        "gets them at load time. `edgeport convert model.onnx --to ort --target-platform amd64` "
        "bakes them in for x86-64 hosts (then it matches the .onnx here); `arm` for ARM devices.",
        "- int8 agreement is judged against PyTorch's top-1; the misses are photos where PyTorch's "
        "own top two classes are nearly tied (see README, What is and is not tested).",
        "", f"![latency per artefact]({os.path.basename(png)})", ""]
    with open(args.out + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(args.out + ".tmp", args.out)
    print(f"wrote {os.path.relpath(args.out, REPO)} and {os.path.relpath(png, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
