import json
import re
import subprocess
import sys

import numpy as np
import pytest

from edge.classify import Classifier, top_k
from edge.interpreter import make_interpreter
from edge.tensors import dequantize
from tests.conftest import run_cli


def test_dequantize_uses_int64():
    q = np.array([0, 255, 128], np.uint8)
    assert dequantize(q, 0.5, 128).tolist() == [-64.0, 63.5, 0.0]
    assert dequantize(np.array([-128, 127], np.int8), 1.0, 127).tolist() == [-255.0, 0.0]


def test_top_k_order_threshold_and_ties():
    s = np.array([0.1, 0.5, 0.3, 0.5, 0.0], np.float32)
    assert [c.id for c in top_k(s, 3)] == [1, 3, 2]
    assert [c.id for c in top_k(s, 10, threshold=0.2)] == [1, 3, 2]
    assert top_k(s, 0) == []


@pytest.mark.parametrize("kind", ["float", "nchw", "uint8", "int8"])
def test_tiny_models_predict_colors(tiny, color_images, kind):
    interp, _ = make_interpreter(tiny[kind])
    c = Classifier(interp)
    assert c.preprocess.spec.layout == ("NCHW" if kind == "nchw" else "NHWC")
    for name, want in (("red", 0), ("green", 1), ("blue", 2), ("gray", 3)):
        (top,) = c.classify(c.preprocess.load(color_images / f"{name}.png"))
        assert top.id == want, (kind, name, top)
        assert 0 < top.score <= 1.0


def test_text_output_matches_pycoral(capsys, tiny, color_images, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\ngray\n")
    code, out, _ = run_cli(capsys, "classify", "-m", tiny["uint8"], "-i", color_images / "blue.png",
                           "-l", labels, "-k", "2", "-c", "3")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "----INFERENCE TIME----"
    assert lines[1].startswith("Note: The first inference on Edge TPU is slow")
    assert all(re.fullmatch(r"\d+\.\dms", line) for line in lines[2:5])
    assert lines[5] == "-------RESULTS--------"
    assert re.fullmatch(r"blue: 0\.9\d{4}", lines[6])
    assert re.fullmatch(r"gray: 0\.\d{5}", lines[7])
    assert len(lines) == 8


def test_json_output_and_folder(capsys, tiny, color_images):
    code, out, _ = run_cli(capsys, "classify", "-m", tiny["int8"], "-i", color_images, "--json", "-c", "1")
    assert code == 0
    data = json.loads(out)
    assert data["command"] == "classify" and data["exit_code"] == 0 and data["model"] == str(tiny["int8"])
    assert data["runtime"] == "ai_edge_litert" and data["device"] == "cpu"
    got = {r["image"].rsplit("/", 1)[1]: r["classes"][0]["id"] for r in data["results"]}
    assert got == {"blue.png": 2, "gray.png": 3, "green.png": 1, "red.png": 0}
    assert all(len(r["inference_ms"]) == 1 for r in data["results"])


def test_threshold_and_mean_std_flags(capsys, tiny, color_images):
    code, out, _ = run_cli(capsys, "classify", "-m", tiny["float"], "-i", color_images / "red.png",
                           "-t", "0.999", "-c", "1")
    assert code == 0 and out.strip().endswith("-------RESULTS--------")
    # mean 0 / std 255 maps red to ~(0.9, 0.08, 0.08): still red, but a different score
    code, out2, _ = run_cli(capsys, "classify", "-m", tiny["float"], "-i", color_images / "red.png",
                            "-a", "0", "-s", "255", "-c", "1")
    assert code == 0 and out2.splitlines()[-1].startswith("0: ") and out2.splitlines()[-1] != out.splitlines()[-1]


@pytest.mark.parametrize("flag,value", [("-a", "nan"), ("--mean", "inf"), ("-s", "nan"), ("-s", "inf"),
                                        ("-s", "0"), ("--std", "-128"), ("-t", "nan"), ("-t", "inf"),
                                        ("-k", "0"), ("-c", "-1"),
                                        ("--threads", "0")])
def test_nan_inf_zero_and_negative_are_refused(capsys, tiny, color_images, flag, value):
    """These gave empty results with exit 0 (NaN, inf) or odd ones: now one error line, exit 2."""
    code, out, err = run_cli(capsys, "classify", "-m", tiny["float"], "-i", color_images / "red.png",
                             "-c", "1", f"{flag}={value}")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: argument ") and f"'{value}'" in err


def test_sidecar_preprocessing_is_used(capsys, tiny, color_images, tmp_path):
    import shutil

    model = tmp_path / "m.tflite"
    shutil.copy(tiny["float"], model)
    # A sidecar whose mean is this very red: the red photo normalizes to zeros, i.e. gray (3).
    (tmp_path / "m.tflite.edgeport.json").write_text(
        json.dumps({"preprocessing": {"mean": [230, 20, 20], "std": [1, 1, 1]}}))
    code, out, _ = run_cli(capsys, "classify", "-m", model, "-i", color_images / "red.png", "--json", "-c", "1")
    assert code == 0
    data = json.loads(out)
    assert "mean [230.0, 20.0, 20.0]" in data["preprocessing"]
    assert data["results"][0]["classes"][0]["id"] == 3


@pytest.mark.parametrize("image,label,score", [
    ("grace_hopper.bmp", "academic gown", 0.33), ("bird.bmp", "chickadee", 0.44), ("sunflower.bmp", "daisy", 0.63),
])
def test_coral_mobilenet_top1(capsys, coral, image, label, score):
    code, out, _ = run_cli(capsys, "classify", "-m", coral / "mobilenet_v1_0.25_128_quant.tflite",
                           "-l", coral / "imagenet_labels.txt", "-i", coral / image, "-c", "1")
    assert code == 0
    name, value = out.splitlines()[-1].rsplit(": ", 1)
    assert name.startswith(label) and abs(float(value) - score) < 0.01


def test_compiled_model_without_tpu_cli(capsys, coral):
    code, out, err = run_cli(capsys, "classify", "-m", coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite",
                             "-i", coral / "bird.bmp")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "compiled for the Edge TPU" in err
    assert "mobilenet_v1_0.25_128_quant.tflite" in err and "Traceback" not in err


def test_usage_errors(capsys, tiny, color_images, tmp_path):
    code, _, err = run_cli(capsys, "classify", "-m", tmp_path / "nope.tflite", "-i", color_images)
    assert code == 2 and "cannot read" in err
    code, _, err = run_cli(capsys, "classify", "-m", tiny["float"], "-i", color_images, "--device", "gpu")
    assert code == 2 and "invalid device" in err
    code, _, err = run_cli(capsys, "classify", "-m", tiny["float"], "-i", color_images, "-c", "0")
    assert code == 2


def test_short_form_help_is_fast_and_light():
    code = ("import sys, time; t=time.perf_counter();"
            "from edgeport.cli import classify_main\n"
            "try:\n classify_main(['--help'])\nexcept SystemExit: pass\n"
            "heavy=[m for m in ('numpy','tensorflow','torch','onnx','coremltools','PIL') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]"), out


def test_threshold_takes_logit_scale_values(capsys, tiny, color_images):
    """Scores are dequantized outputs (logits for many models): -t above 1 or below 0 is valid."""
    for t in ("-3", "1.5"):
        code, out, err = run_cli(capsys, "classify", "-m", tiny["float"], "-i", color_images / "red.png",
                                 "-t", t, "-c", "1")
        assert code == 0, err
