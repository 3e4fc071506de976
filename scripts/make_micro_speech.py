"""Speech features for pymicro-wakeword's streaming models: each says its wake word.

    python scripts/make_micro_speech.py [--work DIR] [--corpus DIR] [--out DIR]

Maintainer script, not run in CI: it needs `pymicro-features` (2.0.2, the TFLite Micro audio
frontend pymicro-wakeword 2.5.0 computes its features with: `pip install pymicro-features`)
and espeak-ng and ALSA's voice files, fetched as Debian packages by
scripts/make_audio_calibration.py (`apt-get download` into WORK, default .cache/audio/).
Its output is committed (tests/data/micro_speech/, about 5 KB a model), so the tests need
none of these.

Per model, one stream of 16 kHz speech: ALSA's recorded "Front Center" (a man's voice,
other speech), a quarter second of silence, the wake word said by espeak-ng, a quarter
second of silence. The voice is one of make_audio_calibration's six, the one the source
model scores highest ("Hey Jarvis" is heard in the en-us+f3 voice; in most others its score
stays 0); it is named in VOICE below, so the choice is fixed, not remade on each run.

The stream goes through the features as pymicro-wakeword 2.5.0 makes them
(`MicroWakeWordFeatures`: 16-bit samples fed to `MicroFrontend.process_samples` 160 at a
time, one 40-channel feature window per 10 ms, 30 ms wide) and the model's input as
`MicroWakeWord.process_streaming_prob` makes it: `stride` consecutive windows (the input's
dimension 1, 3 for these models; no overlap) quantized as round(f / scale + zero_point) to
int8 with the input's own quantization. Each such step is one call of the model.

It writes OUT/micro_<model>.npz (default OUT = tests/data/micro_speech), keyed by the
model's input name, the steps in order (N, 1, stride, 40) int8, and prints the files used
with their sha256 and the source model's score (uint8 output / 256) at each step, run with
edge's TFLite interpreter (the variables kept across invoke(), as on a device).
"""
import argparse
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import make_audio_calibration as audio  # noqa: E402  (the script's folder, put on the path above)

WORDS = {"alexa": "Alexa", "hey_jarvis": "Hey Jarvis", "okay_nabu": "Okay Nabu"}
VOICE = {"alexa": ("en+m3", 130), "hey_jarvis": ("en-us+f3", 130), "okay_nabu": ("en+m3", 130)}
OTHER_SPEECH = "Front_Center"
SAMPLES_PER_CHUNK = 160          # pymicro-wakeword: 10 ms at 16 kHz
GAP = audio.RATE // 4


def die(msg):
    sys.exit(f"make_micro_speech: {msg}")


def features(samples):
    """pymicro-wakeword's feature windows of int16-range `samples`: (windows, 40) float32."""
    try:
        from pymicro_features import MicroFrontend
    except ImportError:
        die("pymicro-features is not installed: pip install pymicro-features==2.0.2")
    pcm = np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()
    frontend, out, i, chunk = MicroFrontend(), [], 0, SAMPLES_PER_CHUNK * 2
    while i + chunk <= len(pcm):
        result = frontend.process_samples(pcm[i:i + chunk])
        i += result.samples_read * 2
        if result.features:
            out.append(result.features)
    return np.array(out, np.float32)


def steps(windows, stride, scale, zero_point):
    """The model's inputs, one per call: `stride` consecutive windows, no overlap, quantized to
    int8 as pymicro-wakeword does; (N, 1, stride, channels)."""
    n = len(windows) // stride
    x = windows[:n * stride].reshape(n, 1, stride, windows.shape[1])
    return np.clip(np.round(x / scale + zero_point), -128, 127).astype(np.int8)


def scores(path, xs):
    """The source model's score (dequantized output) at each step, its state kept."""
    from edge.interpreter import make_interpreter

    it, _ = make_interpreter(str(path), device="cpu")
    d, o = it.get_input_details()[0], it.get_output_details()[0]
    scale, zp = o["quantization"]
    out = []
    for x in xs:
        it.set_tensor(d["index"], x)
        it.invoke()
        out.append((float(it.get_tensor(o["index"]).reshape(-1)[0]) - zp) * scale)
    return np.array(out)


def utterance(work, key):
    """The wake word of `key` said by espeak-ng (written once into WORK/tts/)."""
    import subprocess

    cmd, env = audio.espeak(work)
    voice, speed = VOICE[key]
    folder = work / "tts"
    folder.mkdir(exist_ok=True)
    path = folder / f"{key}_{voice}_{speed}.wav"
    if not path.is_file():
        subprocess.run(cmd + ["-v", voice, "-s", str(speed), "-w", str(path), WORDS[key]],
                       env=env, check=True, capture_output=True)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "audio")
    p.add_argument("--corpus", type=Path,
                   default=Path(os.environ.get("EDGEPORT_CORPUS") or ROOT / ".cache" / "corpus"))
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "micro_speech")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    from edge.tflite_model import TFLiteModel

    other = audio.extracted(args.work) / audio.SOUNDS / f"{OTHER_SPEECH}.wav"
    for key in WORDS:
        model = args.corpus / f"micro_{key}.tflite"
        if not model.is_file():
            die(f"{model} is missing: run scripts/fetch_corpus.py --only micro_{key} first")
        said = utterance(args.work, key)
        parts = []
        for path in (other, said):
            x, rate = audio.read_wav(path)
            parts.append(audio.resample(x, rate))
            print(f"{path.name}  {len(x) / rate:.2f} s  sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
        stream = np.concatenate([parts[0], np.zeros(GAP), parts[1], np.zeros(GAP)])
        inp = TFLiteModel.load(str(model)).inputs()[0]
        q = inp.quantization
        stride = int(inp.shape[1])
        xs = steps(features(stream), stride, float(q.scale[0]), int(q.zero_point[0]))
        dest = args.out / f"micro_{key}.npz"
        tmp = dest.with_name(dest.name + ".tmp.npz")
        np.savez_compressed(tmp, **{inp.name: xs})
        os.replace(tmp, dest)
        s = scores(model, xs)
        print(f"{dest.name}: {len(xs)} steps of {list(xs.shape[1:])} int8 ({len(stream) / audio.RATE:.2f} s); "
              f"score in the source: max {s.max():.3f} at step {int(s.argmax())}, "
              f"{int((s > 0.5).sum())} steps above 0.5, first {len(xs) // 2} steps max {s[:len(xs) // 2].max():.3f}")


if __name__ == "__main__":
    main()
