"""Calibration and validation data for openWakeWord's float TFLite models, from real speech.

    python scripts/make_audio_calibration.py [--work DIR] [--corpus DIR] [--out DIR] [--no-tts]

Maintainer script, not run in CI. Nothing is installed and no audio is committed: Debian
packages are fetched with `apt-get download` into WORK (default .cache/audio/, gitignored)
and unpacked there with `dpkg-deb -x`.

  * Recorded speech: `alsa-utils`, ALSA's speaker-test voice files
    (/usr/share/sounds/alsa/{Front,Rear,Side}_{Left,Center,Right}.wav, a man saying "Front
    Center" etc.; 48 kHz mono 16-bit; GPL-2 with the package). Noise.wav is left out.
  * Synthesized wake words (unless --no-tts): `espeak-ng` (GPL-3) and the libraries it loads,
    run from the unpacked folder, says "Alexa" and "Hey Jarvis" in six voices at two speeds.
    This is text-to-speech, not a recording; openWakeWord's models were themselves trained
    on synthetic speech, and without it the wake-word models see only negatives (their
    scores stay below int8's resolution, 1/256).

Every file is resampled to 16 kHz (windowed-sinc low-pass, linear interpolation), the voice
files joined, each synthesized word set between half-second silences, and the whole stream
(int16-range floats) sent through openWakeWord's own chain, each model run with edge's
TFLite interpreter on the CPU:

  oww_melspectrogram.tflite  audio [1, 1280]     -> windows of 1280 samples, hop 1280
  (the mel frames of the whole stream, scaled as openWakeWord does: x / 10 + 2)
  oww_embedding.tflite       mel [1, 76, 32, 1]  -> windows of 76 frames, hop 8
  oww_hey_jarvis.tflite,
  oww_alexa.tflite           emb [1, 16, 96]     -> windows of 16 embeddings, hop 1

The same stream gives Resemblyzer's speaker encoder (resemblyzer_encoder, a PyTorch
checkpoint) its input as resemblyzer/audio.py makes it, without librosa: the stream scaled to
-1..1 and raised to -30 dBFS (normalize_volume, increase only), 40-band mel power frames
(librosa.feature.melspectrogram's defaults as resemblyzer calls it: n_fft 400 = 25 ms, hop 160
= 10 ms, periodic Hann window, centred with zero padding, power 2, Slaney mel filters 0..8 kHz,
Slaney area normalisation; not a log-mel), cut into its partial utterances of 160 frames
(1.6 s), hop 80: OUT/resemblyzer_encoder.npz, key `mels` (the forward's argument), [N, 1, 160, 40].
Its voice activity trimming (webrtcvad) is left out: the stream's silences are half a second.

It writes OUT/oww_<model>.npz (default OUT = WORK/calibration), each keyed by the model's
input name, the windows shuffled (seed 0, so the first 100 that calibration takes cover the
whole stream) and stacked along axis 0, and prints the files used with their sha256, the
shapes, sample counts, value ranges, and the float wake-word models' scores.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PACKAGE, VERSION = "alsa-utils", "1.2.8-1"
SOUNDS = "usr/share/sounds/alsa"
# espeak-ng and what its binary loads that a slim Debian lacks (bookworm)
TTS_PACKAGES = ("espeak-ng", "espeak-ng-data", "libespeak-ng1", "libpcaudio0", "libsonic0", "libpulse0",
                "libsndfile1", "libasyncns0", "libflac12", "libvorbis0a", "libvorbisenc2", "libopus0",
                "libogg0", "libmpg123-0", "libmp3lame0")
TTS_WORDS = {"alexa": "Alexa", "hey_jarvis": "Hey Jarvis"}
TTS_VOICES = ("en", "en-us", "en-gb-x-rp", "en+m3", "en-us+f2", "en-us+f3")
TTS_SPEEDS = (130, 170)
VOICES = ("Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right",
          "Side_Left", "Side_Right")
RATE = 16000
MEL_WINDOW, EMB_WINDOW, EMB_HOP, CLS_WINDOW = 1280, 76, 8, 16


def die(msg):
    sys.exit(f"make_audio_calibration: {msg}")


def _tools():
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            die(f"'{tool}' not found: this script needs Debian's apt-get and dpkg-deb")


def extracted(work):
    """The extracted alsa-utils package in `work` (downloaded and unpacked when missing)."""
    dest = work / f"x_{PACKAGE}"
    if (dest / SOUNDS).is_dir():
        return dest
    _tools()
    debs = sorted(work.glob(f"{PACKAGE}_{VERSION}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", f"{PACKAGE}={VERSION}"], cwd=work, check=True)
        debs = sorted(work.glob(f"{PACKAGE}_{VERSION}_*.deb"))
    if not debs:
        die(f"apt-get wrote no {PACKAGE}_{VERSION}_*.deb in {work}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(dest)], check=True)
    return dest


def espeak(work):
    """A command list running the unpacked espeak-ng, and its environment."""
    dest = work / "x_espeak-ng"
    binary = dest / "usr" / "bin" / "espeak-ng"
    if not binary.is_file():
        _tools()
        debs = work / "debs"
        debs.mkdir(exist_ok=True)
        subprocess.run(["apt-get", "download", *TTS_PACKAGES], cwd=debs, check=True)
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    lib = dest / "usr" / "lib" / "x86_64-linux-gnu"
    env = dict(os.environ, LD_LIBRARY_PATH=f"{lib}:{lib / 'pulseaudio'}")
    return [str(binary), f"--path={lib / 'espeak-ng-data'}"], env


def synthesize(work):
    """[(file, word)] of the wake words said by espeak-ng (written once into WORK/tts/)."""
    cmd, env = espeak(work)
    folder = work / "tts"
    folder.mkdir(exist_ok=True)
    out = []
    for key, text in TTS_WORDS.items():
        for voice in TTS_VOICES:
            for speed in TTS_SPEEDS:
                path = folder / f"{key}_{voice}_{speed}.wav"
                if not path.is_file():
                    subprocess.run(cmd + ["-v", voice, "-s", str(speed), "-w", str(path), text],
                                   env=env, check=True, capture_output=True)
                out.append((path, key))
    return out


def read_wav(path):
    """(int16 samples as float64, sample rate) of a mono 16-bit WAV file."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            die(f"{path}: expected mono 16-bit PCM")
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
    return data, rate


def resample(x, rate):
    """`x` at `rate` Hz -> 16 kHz: windowed-sinc low-pass at the new Nyquist frequency, then
    linear interpolation at the new sample times."""
    if rate == RATE:
        return x
    q = rate / RATE
    n = np.arange(-64, 65)
    taps = np.sinc(n / q) / q * np.hamming(len(n))
    smooth = np.convolve(x, taps, mode="same") if q > 1 else x
    t = np.arange(int(len(x) / q)) * q
    return np.interp(t, np.arange(len(x)), smooth)


def speech_stream(folder, words=()):
    """The voice files at 16 kHz, joined, then each of `words` between half-second silences;
    and [(file, sha256, seconds)]."""
    parts, used = [], []
    files = [folder / f"{name}.wav" for name in VOICES] + [path for path, _ in words]
    gap = np.zeros(RATE // 2)
    for i, path in enumerate(files):
        x, rate = read_wav(path)
        parts += [resample(x, rate)] if i < len(VOICES) else [gap, resample(x, rate), gap]
        used.append((path.name, hashlib.sha256(path.read_bytes()).hexdigest(), len(x) / rate))
    return np.concatenate(parts), used


def run(path, x):
    """Outputs of the TFLite model at `path` on one float32 input `x` (resized to its shape)."""
    from edge.interpreter import make_interpreter

    it, _ = make_interpreter(str(path), device="cpu")
    d = it.get_input_details()[0]
    if tuple(d["shape"]) != x.shape:
        it.resize_tensor_input(d["index"], x.shape)
        it.allocate_tensors()
        d = it.get_input_details()[0]
    it.set_tensor(d["index"], x.astype(np.float32))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]), d["name"]


SPK_FFT, SPK_HOP, SPK_MELS, SPK_FRAMES, SPK_STEP = 400, 160, 40, 160, 80


def hz_to_mel(f):
    """Slaney's mel scale (librosa's default, htk=False): linear to 1 kHz, then logarithmic."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log = f >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f = m * (200.0 / 3)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), f)


def mel_filters(rate=RATE, n_fft=SPK_FFT, n_mels=SPK_MELS):
    """librosa.filters.mel(sr, n_fft, n_mels) with its defaults: triangles on Slaney's scale
    from 0 Hz to rate / 2, each scaled to unit area (norm='slaney'). [n_mels, 1 + n_fft // 2]."""
    freqs = np.linspace(0, rate / 2, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(rate / 2), n_mels + 2))
    gaps = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / gaps[:-1, None]
    upper = ramps[2:] / gaps[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))[:, None]


def speaker_mels(audio):
    """Resemblyzer's mel frames [T, 40] of `audio` (16 kHz, int16-range floats)."""
    wav = audio / 32768.0
    rms = np.sqrt(np.mean((wav * 32767) ** 2))
    change = -30.0 - 20 * np.log10(rms / 32767)
    if change > 0:                                       # normalize_volume(increase_only=True)
        wav = wav * 10 ** (change / 20)
    padded = np.pad(wav, SPK_FFT // 2)                   # centre=True, zero padding
    n = 1 + (len(padded) - SPK_FFT) // SPK_HOP
    frames = np.stack([padded[i * SPK_HOP:i * SPK_HOP + SPK_FFT] for i in range(n)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(SPK_FFT) / SPK_FFT)   # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return (power @ mel_filters().T).astype(np.float32)


def windows(x, size, hop):
    return np.stack([x[i:i + size] for i in range(0, len(x) - size + 1, hop)])


def input_name(path):
    from edge.tflite_model import TFLiteModel

    return TFLiteModel.load(path).inputs()[0].name


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "audio")
    p.add_argument("--corpus", type=Path,
                   default=Path(os.environ.get("EDGEPORT_CORPUS") or ROOT / ".cache" / "corpus"))
    p.add_argument("--out", type=Path, help="where the .npz files go (default WORK/calibration)")
    p.add_argument("--no-tts", action="store_true", help="recorded speech only (no synthesized wake words)")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.out or args.work / "calibration"
    out.mkdir(parents=True, exist_ok=True)
    models = {k: args.corpus / f"oww_{k}.tflite" for k in ("melspectrogram", "embedding", "hey_jarvis", "alexa")}
    for path in models.values():
        if not path.is_file():
            die(f"{path} is missing: run scripts/fetch_corpus.py first")

    words = [] if args.no_tts else synthesize(args.work)
    audio, used = speech_stream(extracted(args.work) / SOUNDS, words)
    for name, sha, seconds in used:
        kind = "synthesized" if name.startswith(tuple(TTS_WORDS)) else "recorded"
        print(f"{kind}: {name}  {seconds:.2f} s  sha256 {sha}")
    print(f"stream: {len(audio) / RATE:.2f} s at {RATE} Hz, peak {np.abs(audio).max():.0f}")

    mel_in = windows(audio, MEL_WINDOW, MEL_WINDOW)[:, None, :]                 # (N, 1, 1280)
    spec, _ = run(models["melspectrogram"], audio[None])                        # whole stream
    mel = spec.reshape(-1, 32) / 10.0 + 2.0                                     # openWakeWord's scaling
    emb_in = windows(mel, EMB_WINDOW, EMB_HOP)[:, None, :, :, None]             # (N, 1, 76, 32, 1)
    emb = np.stack([run(models["embedding"], e)[0].reshape(96) for e in emb_in])
    cls_in = windows(emb, CLS_WINDOW, 1)[:, None]                               # (N, 1, 16, 96)
    data = {"melspectrogram": mel_in, "embedding": emb_in, "hey_jarvis": cls_in, "alexa": cls_in}
    for k, arr in data.items():
        arr = arr[np.random.default_rng(0).permutation(len(arr))].astype(np.float32)
        dest = out / f"oww_{k}.npz"
        np.savez(dest, **{input_name(models[k]): arr})
        print(f"{dest}: {arr.shape[0]} samples of {list(arr.shape[1:])}, "
              f"range [{arr.min():.3g}, {arr.max():.3g}]")
    mels = windows(speaker_mels(audio), SPK_FRAMES, SPK_STEP)[:, None]          # (N, 1, 160, 40)
    mels = mels[np.random.default_rng(0).permutation(len(mels))]
    dest = out / "resemblyzer_encoder.npz"
    np.savez(dest, mels=mels)
    print(f"{dest}: {mels.shape[0]} samples of {list(mels.shape[1:])}, "
          f"range [{mels.min():.3g}, {mels.max():.3g}]")
    scores = {k: [float(run(models[k], x)[0].reshape(-1)[0]) for x in cls_in] for k in ("hey_jarvis", "alexa")}
    for k, s in scores.items():
        s = np.array(s)
        print(f"oww_{k} (float) on the stream: max score {s.max():.4f}, "
              f"{int((s > 0.5).sum())} of {len(s)} windows above 0.5")


if __name__ == "__main__":
    main()
