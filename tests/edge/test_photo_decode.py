"""Camera photos: JPEGs much larger than the model's input decode in draft mode (load_pixels),
upright per EXIF, close to the exact decode; other formats and small JPEGs are unchanged; every
command loads model pixels through that one function."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge import preprocess
from edge.preprocess import _decode, load_image, load_pixels, set_exact_decode

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fast_decode():
    set_exact_decode(False)
    yield
    set_exact_decode(False)


def scene(w=1600, h=1200):
    """A photo-like RGB image with structure that shows a wrong rotation or mirroring."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 255 * x / w
    g = 255 * y / h
    b = 128 + 100 * np.sin(x / 37.0) * np.cos(y / 23.0)
    arr = np.stack([r, g, b], -1)
    arr[: h // 3, : w // 4] = (250, 20, 20)  # a red block in the top-left corner only
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


# EXIF orientation o: how the stored pixels are transformed back to upright (PIL transposes).
TO_UPRIGHT = {1: [], 2: [Image.FLIP_LEFT_RIGHT], 3: [Image.ROTATE_180], 4: [Image.FLIP_TOP_BOTTOM],
              5: [Image.TRANSPOSE], 6: [Image.ROTATE_270], 7: [Image.TRANSVERSE], 8: [Image.ROTATE_90]}
# The inverse of each: applied to the upright scene, gives what the camera stores.
TO_STORED = {1: [], 2: [Image.FLIP_LEFT_RIGHT], 3: [Image.ROTATE_180], 4: [Image.FLIP_TOP_BOTTOM],
             5: [Image.TRANSPOSE], 6: [Image.ROTATE_90], 7: [Image.TRANSVERSE], 8: [Image.ROTATE_270]}


def camera_jpeg(path, orientation, upright):
    stored = upright
    for t in TO_STORED[orientation]:
        stored = stored.transpose(t)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, quality=92, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("size", [(224, 224), (128, 96), (96, 160)])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_draft_decode_is_upright_and_close_to_exact(tmp_path, orientation, size):
    upright = scene()
    path = camera_jpeg(tmp_path / f"o{orientation}.jpg", orientation, upright)
    im, drafted = _decode(str(path), 3, size)
    assert drafted and im.size[0] < upright.size[0] and im.size[1] < upright.size[1]
    assert im.size[0] >= 2 * size[0] and im.size[1] >= 2 * size[1]  # still >= twice the input
    fast = np.asarray(load_pixels(str(path), size), np.float32)
    exact = np.asarray(load_pixels(str(path), size, exact=True), np.float32)
    truth = np.asarray(upright.resize(size, Image.LANCZOS), np.float32)
    assert fast.shape == exact.shape == (size[1], size[0], 3)
    assert np.abs(fast - exact).mean() < 1.5, "draft decode drifted from the exact decode"
    assert np.abs(fast - truth).mean() < 3.0, "not upright: EXIF orientation lost on the fast path"
    assert fast[: size[1] // 4, : size[0] // 6, 0].mean() > 200  # the red block is top-left


def test_exact_decode_switch_turns_draft_off(tmp_path):
    path = str(camera_jpeg(tmp_path / "a.jpg", 1, scene()))
    set_exact_decode(True)
    exact = load_pixels(path, (224, 224))
    set_exact_decode(False)
    assert np.array_equal(np.asarray(exact), np.asarray(load_pixels(path, (224, 224), exact=True)))
    full = load_image(path).resize((224, 224), Image.LANCZOS)
    assert np.array_equal(np.asarray(exact), np.asarray(full))
    assert not np.array_equal(np.asarray(exact), np.asarray(load_pixels(path, (224, 224))))


def test_cli_flag_sets_exact_decode():
    from edgeport.cli.args import Parser, add_preprocessing, preprocessing

    p = Parser()
    add_preprocessing(p)
    preprocessing(p.parse_args(["--exact-decode"]))
    assert preprocess.exact_decode()
    preprocessing(p.parse_args([]))  # a command run without the flag: back to the draft decode
    assert not preprocess.exact_decode()


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_other_formats_decode_exactly(tmp_path, fmt):
    path = str(tmp_path / f"a.{fmt.lower()}")
    scene().save(path, fmt)
    got = np.asarray(load_pixels(path, (224, 224)))
    want = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.LANCZOS))
    assert np.array_equal(got, want)


def test_small_jpegs_unchanged():
    """The bundled photos (<= 480 px) are not large enough for a draft at 224 or 128: bit-identical."""
    for p in sorted((ROOT / "images").glob("*.jpg"))[:8]:
        for size in ((224, 224), (128, 128)):
            got = np.asarray(load_pixels(str(p), size))
            want = np.asarray(load_image(str(p)).resize(size, Image.LANCZOS))
            assert np.array_equal(got, want), p.name


def test_grayscale_jpeg_draft(tmp_path):
    path = str(tmp_path / "g.jpg")
    scene().convert("L").save(path, quality=92)
    fast = np.asarray(load_pixels(path, (128, 128), channels=1), np.float32)
    exact = np.asarray(load_pixels(path, (128, 128), channels=1, exact=True), np.float32)
    assert fast.shape == (128, 128) and np.abs(fast - exact).mean() < 1.5


def test_every_image_load_goes_through_load_pixels():
    """classify, eval, validate, calibration and onnx2tf's samples: no package module decodes a
    photo for a model except through load_pixels (so draft mode, --exact-decode and EXIF apply
    to all, and a source and its artefact see the same pixels)."""
    offenders = []
    for pkg in ("edge", "edgeport", "converters"):
        for f in (ROOT / pkg).rglob("*.py"):
            if f.name == "preprocess.py" and f.parent.name == "edge":
                continue
            text = f.read_text(encoding="utf-8")
            if re.search(r"\bload_image\(|Image\.open\(", text):
                offenders.append(str(f.relative_to(ROOT)))
    assert not offenders, f"decode photos with edge.preprocess.load_pixels: {offenders}"


def test_draft_reduces_peak_memory(tmp_path):
    """Pillow's pixel buffers are not Python allocations (tracemalloc misses them): the growth
    of the peak resident set of a fresh process decoding one 7.7 MP photo, exact vs draft."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs Linux /proc/self/status (VmHWM)")
    import subprocess
    import sys

    path = str(camera_jpeg(tmp_path / "big.jpg", 6, scene(3200, 2400)))
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's (pytest's) peak.
    code = ("import sys; from edge.preprocess import load_pixels; "
            "from PIL import Image; Image.new('RGB', (8, 8)).load(); "
            "r = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]); "
            "b = r(); "
            "load_pixels(sys.argv[1], (224, 224), exact=sys.argv[2] == '1'); print(r() - b)")

    def growth_kb(exact):
        out = subprocess.run([sys.executable, "-c", code, path, "1" if exact else "0"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[-1])

    exact, fast = growth_kb(True), growth_kb(False)
    assert exact > 20_000  # 7.7 M pixels, 4 bytes each in Pillow
    assert fast * 4 < exact, (fast, exact)


def test_threads_keep_the_bomb_guard(tmp_path, monkeypatch):
    """Images decode on worker threads: the decompression-bomb refusal still holds there."""
    from concurrent.futures import ThreadPoolExecutor

    from edge.errors import InputError

    monkeypatch.setattr(preprocess, "MAX_PIXELS", 1_000_000)
    big = str(tmp_path / "big.png")
    Image.new("RGB", (1500, 1000)).save(big)  # 1.5 M pixels: above MAX, below Pillow's 2x
    small = str(tmp_path / "small.png")
    Image.new("RGB", (100, 100)).save(small)

    def load(p):
        try:
            load_pixels(p, (32, 32))
            return "ok"
        except InputError as e:
            return "refused" if "pixels" in str(e) else str(e)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(load, [big, small] * 20))
    assert got == ["refused", "ok"] * 20


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_exact_is_bit_identical(tmp_path, orientation, mode):
    """decode_exact (classify's confirmations: rotation and conversion on strips of rows) gives
    the very pixels of --exact-decode, for every EXIF orientation, JPEG's modes, 1 and 3
    channels, and sizes whose strips split unevenly (generated photos)."""
    from edge.preprocess import decode_exact

    rng = np.random.default_rng(orientation)
    w, h = (int(x) for x in rng.integers(500, 1400, 2))
    upright = scene(w, h)
    if mode != "RGB":
        upright = upright.convert(mode)
    path = str(camera_jpeg(tmp_path / f"o{orientation}.jpg", orientation, upright))
    for size in ((224, 224), (128, 96), (96, 160), (61, 37)):
        for channels in (3, 1):
            want = np.asarray(load_pixels(path, size, channels, exact=True))
            got = np.asarray(decode_exact(path, size, channels))
            assert got.shape == want.shape and np.array_equal(got, want), (size, channels)


def test_decode_exact_halves_peak_memory(tmp_path):
    """A confirmation's exact decode holds one full-size image: the growth of the peak resident
    set of a fresh process decoding one 7.7 MP portrait photo, --exact-decode vs decode_exact."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs Linux /proc/self/status (VmHWM)")
    import subprocess
    import sys

    path = str(camera_jpeg(tmp_path / "big.jpg", 6, scene(2400, 3200)))
    code = ("import sys; from edge.preprocess import load_pixels, decode_exact; "
            "from PIL import Image; Image.new('RGB', (8, 8)).load(); "
            "r = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]); "
            "b = r(); "
            "(decode_exact(sys.argv[1], (224, 224)) if sys.argv[2] == 'lean' else "
            "load_pixels(sys.argv[1], (224, 224), exact=True)); print(r() - b)")

    def growth_kb(how):
        out = subprocess.run([sys.executable, "-c", code, path, how], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[-1])

    exact, lean = growth_kb("exact"), growth_kb("lean")
    full = 2400 * 3200 * 4 // 1024  # one full-size image in Pillow, KB
    assert exact > 1.8 * full, (exact, full)  # the decoded image and its rotated copy
    assert lean < 1.4 * full and exact - lean > 0.6 * full, (exact, lean, full)


@pytest.mark.parametrize("orientation", [1, 6])
def test_decode_variants(tmp_path, orientation):
    """A drafted photo comes with a second resampling of the same draft (a box average): the
    first is load_pixels's fast path bit for bit, the second differs from it a little; a small
    image or --exact-decode has no variant."""
    from edge.preprocess import decode_variants

    path = str(camera_jpeg(tmp_path / "a.jpg", orientation, scene()))
    first, second = decode_variants(path, (128, 96))
    assert np.array_equal(np.asarray(first), np.asarray(load_pixels(path, (128, 96))))
    assert second is not None and second.size == first.size
    diff = np.abs(np.asarray(first, np.float32) - np.asarray(second, np.float32))
    assert 0 < diff.mean() < 3.0
    small = str(tmp_path / "s.jpg")
    scene(200, 150).save(small, quality=92)
    assert decode_variants(small, (128, 96))[1] is None
    set_exact_decode(True)
    exact, none = decode_variants(path, (128, 96))
    assert none is None
    assert np.array_equal(np.asarray(exact), np.asarray(load_pixels(path, (128, 96), exact=True)))
