"""Make the three HTML reports docs/reports.md shows, and screenshot them in headless Chromium.

    python scripts/report_screenshots.py [OUT_DIR]     (default: docs/reports)

The same reports the browser test opens (tests/converters/validation/test_html_reports.py): a classifier whose int8
twin was calibrated on the wrong range (validate), a YOLO-style detector and its float TFLite
(validate), and Coral's PoseNet with a custom decoder op (inspect --edgetpu). Needs ../shared
(Coral's fixtures) and Debian's chromium.
"""

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else REPO / "docs" / "reports")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from browser import screenshot
    from test_html_reports import _classifier_pair
    from test_roles import _keras_packed_detector
    from tiny_tf import make_images

    from edgeport.cli import main as edgeport

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "c").mkdir()
        src, art, images = _classifier_pair(tmp / "c")
        edgeport(["validate", str(src), str(art), "--inputs", str(images), "--report", str(tmp / "classifier.html")])
        det = _keras_packed_detector(tmp / "det.keras")
        photos = make_images(tmp / "photos", n=6)
        flags = ["--size", "16", "16", "--mean", "0", "--std", "255"]
        edgeport(["convert", str(det), "--to", "tflite", *flags, "-o", str(tmp / "out")])
        edgeport(["validate", str(det), str(tmp / "out" / "det_float.tflite"), "--inputs", str(photos), *flags,
                  "--report", str(tmp / "detector.html")])
        coral = REPO.parent / "shared" / "fixtures" / "coral"
        edgeport(["inspect", str(coral / "posenet_mobilenet_v1_075_353_481_16_quant_decoder.tflite"), "--edgetpu",
                  "--report", str(tmp / "edgetpu.html")])
        for name in ("classifier", "detector", "edgetpu"):
            screenshot(tmp / f"{name}.html", out / f"{name}.png", width=1100, height=1400)
            print(f"wrote {out / (name + '.png')}")


if __name__ == "__main__":
    main()
