"""What each upstream tool alone achieves on the corpus: the peers' cells, beside edgeport's.

    python scripts/peers_alone.py [--model NAME ...] [--work .cache/peers] [--timeout 120]
                                  [--fresh] [--no-onnx2tf] [--table]

For each corpus model ($EDGEPORT_CORPUS or .cache/corpus; scripts/fetch_corpus.py) and each
target its corpus row names (tests/corpus/test_corpus.py, read when this runs), it runs the
upstream tool a user would run alone, without edgeport's rewrites or input fixes, each in a
child process with a timeout:

  TFLite -> onnx         python -m tf2onnx.convert --tflite M --output X.onnx --opset 17
  ... -> ort             python -m onnxruntime.tools.convert_onnx_models_to_ort (on the ONNX
                         source, or on tf2onnx's ONNX for a TFLite source)
  ... -> coreml          onnx2coreml's Converter().to_mil, then coremltools' mlprogram (same)
  TFLite -> tflite-int8  TF's full-integer calibrator (calibrate_and_quantize, int8 in and out)
                         on the row's own calibration photos or .npz, preprocessed as edgeport
                         preprocesses them; not run when the row has no data
  ONNX -> tflite         the onnx2tf command line from edgeport's isolated environment
                         (converters/toolenv); "not run" when that environment is not built

Each cell is "made" (the artefact was written and loads in its runtime: ONNX Runtime, LiteRT,
coremltools' spec reader), "refused" (the tool's own last error line), "timeout", or "not run"
(saying why: no Edge TPU compiler here, no peer scripted for the source, no data). Where made,
`edgeport validate SOURCE ARTEFACT` with the row's flags and inputs gives "validated",
"FAILED" or "not validated" (Core ML: structure only on Linux). Results are cached in
WORK/cells/MODEL.json (a cell is redone with --fresh, or when its model file changed); --table
prints the per-target summary (markdown) from the cache without running anything.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TARGETS = ["onnx", "ort", "tflite", "tflite-int8", "coreml", "edgetpu"]
PEER = {"onnx": "tf2onnx", "ort": "convert_onnx_models_to_ort", "coreml": "onnx2coreml",
        "tflite-int8": "TF calibrator", "tflite": "onnx2tf", "edgetpu": "edgetpu_compiler"}
MADE, REFUSED, TIMEOUT, NOT_RUN = "made", "refused", "timeout", "not run"
STEP_ERROR = "peers-alone step error: "


def corpus_table():
    """The corpus test module (its CASES and helpers), imported from the working tree."""
    import importlib

    return importlib.import_module("tests.corpus.test_corpus")


def corpus_dir():
    return Path(os.environ.get("EDGEPORT_CORPUS") or REPO / ".cache" / "corpus")


def last_error(text):
    """The tool's own one-line error: its last line that names an error, else its last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    ours = [ln[len(STEP_ERROR):] for ln in lines if ln.startswith(STEP_ERROR)]
    named = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
    line = (ours or named or lines or ["(no output)"])[-1]
    return "".join(c if c.isprintable() else "?" for c in line)[:300]


def run(argv, timeout, cwd=None):
    """(status, one line): MADE with '' when argv exits 0, REFUSED with its error, or TIMEOUT."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                           env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"})
    except subprocess.TimeoutExpired:
        return TIMEOUT, f"over {timeout} s"
    if p.returncode < 0:   # killed by a signal: the tool crashed (no error line of its own)
        return REFUSED, f"crashed (signal {-p.returncode})"
    if p.returncode != 0:
        return REFUSED, last_error(p.stderr + "\n" + p.stdout)
    return MADE, ""


# -- the child steps (python scripts/peers_alone.py --step NAME SRC OUT [DATA]) -----------------
def step_load(path):
    """Load an artefact in its runtime; raise when it does not."""
    if path.endswith((".onnx", ".ort")):
        from edge.ort import ort_session

        ort_session(path)
    elif path.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter

        Interpreter(model_path=path).allocate_tensors()
    elif path.endswith(".mlpackage"):
        import coremltools as ct

        ct.models.MLModel(path, skip_model_load=True).get_spec()
    else:
        raise ValueError(f"no runtime for {path}")


def step_coreml(src, out, shapes="{}"):
    """onnx2coreml for iOS 17 (its ops need it), the row's input shapes written into the graph's
    inputs first (onnx2coreml takes fixed shapes only and has no option for them)."""
    import coremltools as ct
    import onnx
    import onnx2coreml

    model = onnx.load(src)
    fixed = json.loads(shapes)
    for i, inp in enumerate(model.graph.input):
        dims = fixed.get(inp.name, fixed.get("", None) if i == 0 else None)
        if dims:
            for d, v in zip(inp.type.tensor_type.shape.dim, dims):
                d.dim_value = int(v)
    program = onnx2coreml.Converter().to_mil(model, target=ct.target.iOS17)
    ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17).save(out)


def step_int8(src, out, data):
    """TF's full-integer calibrator on the float TFLite, int8 in and out, on the row's data:
    DATA is a JSON list: ["images", folder, mean, std] or ["npz", path]."""
    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python.optimize import calibrator

    from converters.quantize.calibration import load_array_calibration, load_calibration

    kind, *rest = json.loads(data)
    details = Interpreter(model_path=src).get_input_details()
    if kind == "images":
        folder, mean, std = rest
        shape = [int(d) for d in details[0]["shape"]]
        cal = load_calibration(folder, {"mean": mean, "std": std, "layout": "NHWC", "size": shape[1:3]},
                               input_shape=shape, layout="NHWC", holdout=False)
    else:
        inputs = [(d["name"], [int(x) for x in d["shape"]], np.dtype(d["dtype"])) for d in details]
        cal = load_array_calibration(rest[0], inputs, holdout=False)
    with open(src, "rb") as f:
        model = calibrator.add_intermediate_tensors(f.read())
    q = calibrator.Calibrator(model).calibrate_and_quantize(cal.representative_dataset, tf.int8, tf.int8, False,
                                                           activations_type=tf.int8, bias_type=tf.int32)
    with open(out, "wb") as f:
        f.write(q)


def child(argv):
    """Run one step; on an exception, its one line (prefixed STEP_ERROR) as the last stderr line."""
    name, *args = argv
    try:
        {"load": step_load, "coreml": step_coreml, "int8": step_int8}[name](*args)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"{STEP_ERROR}{type(e).__name__}: {first}", file=sys.stderr)
        return 1
    return 0


# -- the cells ---------------------------------------------------------------------------------
def _self(*args):
    return [sys.executable, str(Path(__file__).resolve()), "--step", *map(str, args)]


def made_and_loads(argv, artefact, timeout, cwd=None):
    status, why = run(argv, timeout, cwd)
    if status == MADE:
        if not os.path.exists(artefact):
            return REFUSED, "exit 0 but no artefact written"
        status, why = run(_self("load", artefact), timeout)
        if status == REFUSED:
            why = "made, but does not load: " + why
    return status, why


def row_shapes(args):
    """{input name or '' for the first input: dims} from a row's --input-shapes."""
    out = {}
    if "--input-shapes" in args:
        for item in args[args.index("--input-shapes") + 1:]:
            if item.startswith("--"):
                break
            name, _, dims = item.rpartition(":") if not item.startswith("[") else ("", "", item)
            out[name] = json.loads(dims)
    return out


def row_data(mod, name):
    """The row's calibration/validation inputs as (flags for validate, data for step_int8) or
    (None, why not)."""
    _, _, calibration, _, _ = mod.CASES[name]
    if not calibration:
        return None, "the corpus row has no calibration data"
    try:
        if calibration == mod.AUDIO:
            path = str(mod.audio_data(name))
            return (["--data", path], ["npz", path]), ""
        makers = {"<documents>": mod.document_pages, "<people>": mod.people_photos,
                  "<captchas>": mod.click_captchas, "<rotated pages>": mod.rotated_pages}
        cal = [str(makers[a]()) if a in makers else a for a in calibration]
    except Exception as e:   # a data maker that cannot run here (no network, no tool)
        return None, f"the row's data could not be made here: {last_error(str(e))}"
    mean = [float(v) for v in cal[cal.index("--mean") + 1:cal.index("--std")]]
    std = [float(v) for v in cal[cal.index("--std") + 1:]]
    return (["--inputs", cal[1], *cal[2:]], ["images", cal[1], mean, std]), ""


def convert_cell(mod, name, src, target, work, timeout, peer_onnx, onnx2tf_ready):
    """(status, why, artefact path or None) of one peer cell."""
    fmt = "tflite" if src.endswith(".tflite") else "onnx" if src.endswith(".onnx") else "other"
    if target == "edgetpu":
        return NOT_RUN, "no Edge TPU compiler here", None
    if fmt == "other":
        return NOT_RUN, "no peer scripted for a TorchScript source", None
    py = sys.executable
    if target == "onnx":
        out = str(work / "tf2onnx.onnx")
        return (*made_and_loads([py, "-m", "tf2onnx.convert", "--tflite", src, "--output", out, "--opset", "17"],
                                out, timeout), out)
    if target == "tflite-int8":
        if fmt != "tflite":
            return NOT_RUN, "onnx2tf -oiqt on the row's data is not scripted here", None
        data, why = row_data(mod, name)
        if data is None:
            return NOT_RUN, why, None
        out = str(work / "tf_int8.tflite")
        return (*made_and_loads(_self("int8", src, out, json.dumps(data[1])), out, timeout), out)
    if target == "tflite":
        if fmt != "onnx":
            return NOT_RUN, "no peer makes a float TFLite from a quantized TFLite", None
        if not onnx2tf_ready:
            return NOT_RUN, "onnx2tf env not built", None
        return onnx2tf_cell(src, work, timeout, row_shapes(mod.CASES[name][1]))
    onnx = src if fmt == "onnx" else peer_onnx
    if onnx is None:
        return REFUSED, "no ONNX: tf2onnx made none (its onnx cell)", None
    if target == "ort":
        outdir = work / "ort"
        shutil.rmtree(outdir, ignore_errors=True)
        out = str(outdir / (Path(onnx).stem + ".ort"))
        return (*made_and_loads([py, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", onnx,
                                 "--output_dir", str(outdir)], out, timeout), out)
    if target == "coreml":
        out = str(work / "onnx2coreml.mlpackage")
        shutil.rmtree(out, ignore_errors=True)
        shapes = json.dumps(row_shapes(mod.CASES[name][1]))
        return (*made_and_loads(_self("coreml", onnx, out, shapes), out, timeout), out)
    return NOT_RUN, f"no peer for --to {target}", None


def onnx2tf_cell(src, work, timeout, shapes):
    """The onnx2tf command line, given the row's input shapes (-ois) as a user would."""
    from converters import toolenv
    from converters.routes.onnx2tf import REPO_IMAGES, SAMPLE_FILE, sample_images

    env = toolenv.env_for("onnx2tf")
    scratch = work / "onnx2tf"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    sample_images([REPO_IMAGES], str(scratch / SAMPLE_FILE))   # the test file it otherwise downloads
    shutil.copyfile(src, scratch / "model.onnx")
    out = scratch / "out" / "model_float32.tflite"
    ois = [f"{n}:{','.join(map(str, d))}" for n, d in shapes.items() if n]
    return (*made_and_loads([os.path.join(env.bin, "onnx2tf"), "-i", "model.onnx", "-o", "out", "-n",
                             *(["-ois", *ois] if ois else [])], str(out),
                            timeout, cwd=str(scratch)), str(out))


def validate_cell(mod, name, src, artefact, timeout):
    """'validated', 'FAILED: ...' or 'not validated: ...' of a made artefact."""
    _, args, calibration, _, _ = mod.CASES[name]
    data, why = row_data(mod, name) if calibration else (None, "")
    if calibration and data is None:
        return f"not validated: {why}"
    extra = data[0] if data else []
    try:
        p = subprocess.run([sys.executable, "-m", "edgeport", "validate", src, artefact, "--json",
                            *mod._flags(args, "validate"), *extra], capture_output=True, text=True,
                           timeout=timeout * 2, env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        return f"not validated: validate took over {timeout * 2} s"
    try:
        rep = json.loads(p.stdout)
        result = rep["results"][0] if "results" in rep else rep
    except (ValueError, KeyError, IndexError):
        result = None
    if p.returncode == 0:
        return "validated"
    if p.returncode == 1:
        return "FAILED: " + (str(result.get("summary")) if isinstance(result, dict) else last_error(p.stdout))[:200]
    return "not validated: " + last_error(p.stderr + "\n" + p.stdout)


# -- the run and the table ---------------------------------------------------------------------
def load_cache(folder):
    """Every recorded cell: {"model/target": cell}, from WORK/cells/MODEL.json (one file per
    model, so runs on different models may share a WORK at once)."""
    cells = {}
    for f in sorted(Path(folder).glob("*.json")):
        try:
            cells.update(json.loads(f.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return cells


def save_cache(folder, cells, model):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mine = {k: v for k, v in cells.items() if k.split("/")[0] == model}
    tmp = folder / f".{model}.json.tmp"
    tmp.write_text(json.dumps(mine, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, folder / f"{model}.json")


def run_model(mod, name, src, work, timeout, onnx2tf_ready, cache, fresh):
    from converters.artefact import sha256_of

    digest = sha256_of(src)
    targets = [t for t in TARGETS if t in mod.CASES[name][4]]
    peer_onnx = None
    for target in targets:
        key = f"{name}/{target}"
        cell = cache.get(key)
        if cell and cell.get("sha256") == digest and not fresh:
            if target == "onnx" and cell["status"] == MADE and os.path.exists(cell.get("artefact") or ""):
                peer_onnx = cell["artefact"]
            continue
        t0 = time.perf_counter()
        status, why, artefact = convert_cell(mod, name, str(src), target, work / name, timeout, peer_onnx,
                                             onnx2tf_ready)
        cell = {"peer": PEER[target], "status": status, "why": why, "sha256": digest,
                "seconds": round(time.perf_counter() - t0, 1)}
        if status == MADE:
            cell["artefact"] = artefact
            cell["validation"] = validate_cell(mod, name, str(src), artefact, timeout)
            if target == "onnx":
                peer_onnx = artefact
        cache[key] = cell
        print(f"{name}\t{target}\t{PEER[target]}\t{status}\t{cell.get('validation', why)[:160]}", flush=True)
        yield


def table(cache, models=None):
    """Per target and in total: each peer alone, cells validated / made / refused (timeouts and
    not-run counted apart)."""
    per = {t: Counter() for t in [*TARGETS, "total"]}
    for key, cell in cache.items():
        model, target = key.split("/")
        if models and model not in models:
            continue
        kinds = [cell["status"]] + (["validated"] if cell.get("validation") == "validated" else [])
        kinds += ["FAILED"] if str(cell.get("validation", "")).startswith("FAILED") else []
        for t in (target, "total"):
            per[t].update(kinds)
    cols = ["validated", "FAILED", MADE, REFUSED, TIMEOUT, NOT_RUN]
    lines = ["| target (peer alone) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for t in [*TARGETS, "total"]:
        label = "**total**" if t == "total" else f"{t} ({PEER[t]})"
        lines.append(f"| {label} | " + " | ".join(str(per[t][c]) for c in cols) + " |")
    return "\n".join(lines)


def closing(cache):
    """Per target: validated cells of edgeport before and after the rewrites (scripts/corpus_cells.py)
    beside each peer alone's, over the models in both corpus tables that this run measured."""
    sys.path.insert(0, str(REPO / "scripts"))
    import corpus_cells as cc

    before = cc.load_cases(cc.before_source(), "before")
    after = cc.load_cases(cc.AFTER.read_text(encoding="utf-8"), "after")
    measured = {k.split("/")[0] for k in cache}
    models = sorted(set(before) & set(after) & measured)
    b, a = cc.cells(before), cc.cells(after)
    lines = [f"Validated cells, {len(models)} models in both corpus tables and measured here "
             "(n = cells the corpus row names for that target):", "",
             "| target | n | edgeport before | edgeport after | peer alone | peer alone: made / refused / timeout / not run |",
             "|---|---|---|---|---|---|"]
    tot = Counter()
    for t in TARGETS:
        here = [m for m in models if f"{m}/{t}" in cache]   # the same cells for edgeport and the peer
        cells = [cache[f"{m}/{t}"] for m in here]
        row = Counter(n=len(cells),
                      before=sum(b[m, t][0] == cc.VALIDATED for m in here),
                      after=sum(a[m, t][0] == cc.VALIDATED for m in here),
                      peer=sum(c.get("validation") == "validated" for c in cells),
                      **{k: sum(c["status"] == k for c in cells) for k in (MADE, REFUSED, TIMEOUT, NOT_RUN)})
        tot.update(row)
        lines.append(f"| {t} ({PEER[t]}) | {row['n']} | {row['before']} | {row['after']} | {row['peer']} | "
                     f"{row[MADE]} / {row[REFUSED]} / {row[TIMEOUT]} / {row[NOT_RUN]} |")
    lines.append(f"| **total** | {tot['n']} | {tot['before']} | {tot['after']} | {tot['peer']} | "
                 f"{tot[MADE]} / {tot[REFUSED]} / {tot[TIMEOUT]} / {tot[NOT_RUN]} |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--step"]:
        return child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="*", default=None)
    ap.add_argument("--work", default=str(REPO / ".cache" / "peers"))
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--no-onnx2tf", action="store_true", help="mark onnx2tf cells not run (its minutes)")
    ap.add_argument("--table", action="store_true", help="only print the table from the cache")
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    cache_path = work / "cells"
    cache = load_cache(cache_path)
    mod = corpus_table()
    if not args.table:
        from converters import toolenv

        onnx2tf_ready = not args.no_onnx2tf and toolenv.env_for("onnx2tf").ready
        manifest = json.loads((corpus_dir() / "manifest.json").read_text(encoding="utf-8"))
        files = {e["name"]: corpus_dir() / e["file"] for e in manifest}
        for name in args.model or sorted(mod.CASES):
            if name not in files or not files[name].is_file():
                print(f"{name}: not in {corpus_dir()} (scripts/fetch_corpus.py --only {name})", file=sys.stderr)
                continue
            cache.update(load_cache(cache_path))   # cells another run recorded meanwhile
            for _ in run_model(mod, name, files[name], work, args.timeout, onnx2tf_ready, cache, args.fresh):
                save_cache(cache_path, cache, name)
    print(table(cache, set(args.model) if args.model else None))
    if args.table:
        print()
        print(closing(cache))
        print()
        print("Each peer's own error, per cell refused (model: target, peer: its last error line):")
        print()
        for key, cell in sorted(cache.items()):
            if cell["status"] == REFUSED and not cell["why"].startswith("no ONNX"):
                model, target = key.split("/")
                why = re.sub(r"(/[^\s/:'\"]+)+/", "", cell["why"])   # no machine paths: file names only
                print(f"- {model}: {target}, {cell['peer']}: `{why[:160]}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
