"""Images into a model's input tensor: decode, orient, resize, normalize, quantize, lay out.

Semantics follow pycoral's classify_image.py: pixels are 0..255, `mean` and `std` are in
those units, and a uint8 input whose quantization already equals (mean, std) is fed raw.
Extended to int8 and float inputs, NHWC and NCHW, grayscale and per-channel mean/std.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections import namedtuple
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from _typeshed import StrPath
    from PIL import Image as PILImage

InputSpec = namedtuple("InputSpec", "index name shape dtype layout height width channels scale zero_point")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MAX_PIXELS = 100_000_000  # decompression-bomb guard: larger images are refused with a clear error
_OPEN_LOCK = threading.Lock()


def guess_layout(shape: Sequence[int]) -> str | None:
    """'NHWC', 'NCHW' or None for a 4-D image input shape."""
    if len(shape) != 4:
        return None
    if shape[-1] in (1, 3, 4):
        return "NHWC"
    if shape[1] in (1, 3, 4):
        return "NCHW"
    return None


def input_spec(detail: dict[str, Any], layout: str | None = None) -> InputSpec:
    """InputSpec from one entry of interpreter.get_input_details()."""
    shape = tuple(int(x) for x in detail["shape"])
    sig = detail.get("shape_signature")
    if sig is not None and len(sig) == len(shape) and any(
            int(s) < 0 and d == 1 for s, d in list(zip(sig, shape))[1:]):
        open_dims = "[" + ",".join("?" if int(s) < 0 else str(int(s)) for s in sig) + "]"
        raise InputError(f"model input '{detail['name']}' has open dimensions {open_dims}; "
                         "classify will not guess an image size for it",
                         "give it one: --input-shapes [1,H,W,C] (or [1,C,H,W])")
    layout = layout or guess_layout(shape)
    if layout == "NHWC":
        _, h, w, c = shape
    elif layout == "NCHW":
        _, c, h, w = shape
    elif len(shape) == 3:  # HW plus channel, no batch
        layout, (h, w, c) = "HWC", shape
    else:
        raise InputError(f"model input '{detail['name']}' has shape {list(shape)}, which is not an image",
                         "classify takes models with one NHWC or NCHW image input")
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return InputSpec(detail["index"], detail["name"], shape, np.dtype(detail["dtype"]), layout,
                     h, w, c, float(scale), int(zero_point))


# Photos much larger than the model's input: a JPEG is decoded at 1/2, 1/4 or 1/8 scale by the
# JPEG decoder itself (DCT scaling, Pillow's `draft`) to the smallest size still at least
# DRAFT_GAP times the input in each dimension, then reduced by whole factors (box average) and
# resized with LANCZOS. A 12 MP photo decodes about 4x faster, in a sixteenth of the memory,
# and the 224x224 result differs by a fraction of a grey level on average. Off with
# `--exact-decode` (set_exact_decode), which decodes every pixel as before. Only JPEG has
# DCT scaling: PNG, BMP and the rest decode and resize exactly as with --exact-decode.
DRAFT_GAP = 2
# The second resampling of a drafted photo (decode_variants): a box average straight from the
# draft-decoded image. Of Pillow's filters it is the one whose answers most often differ from
# the LANCZOS path's exactly where the exact decode's differ (docs/benchmarks.md, "Close calls
# confirmed"). An int: Image.Resampling.BOX, without importing Pillow here.
VARIANT_FILTER = 4
_exact_decode = False


def set_exact_decode(exact: object) -> None:
    """Process-wide: True decodes every JPEG in full (no draft mode). The CLI sets it from
    `--exact-decode`; every image load (classify, eval, validate, calibration) follows it."""
    global _exact_decode
    _exact_decode = bool(exact)


def exact_decode() -> bool:
    return _exact_decode


def load_pixels(path: StrPath, size: Sequence[int], channels: int = 3,
                exact: bool | None = None) -> PILImage.Image:
    """An image file as the PIL image a model of input `size` (width, height) takes: decoded
    (in draft mode when it is a JPEG much larger than `size`, unless `exact` or --exact-decode),
    upright per EXIF, RGB (or L), resized to `size` with LANCZOS. The one way every command
    turns a photo into model pixels, so that a source and its artefact see the same pixels."""
    return decode_pixels(path, size, channels, exact)[0]


def decode_pixels(path: StrPath, size: Sequence[int], channels: int = 3,
                  exact: bool | None = None) -> tuple[PILImage.Image, bool]:
    """(image, drafted): load_pixels's image, and True when the JPEG decoder drafted it
    (decoded at a reduced scale, the fast path) rather than decoding every pixel."""
    from PIL import Image

    size = (int(size[0]), int(size[1]))
    exact = _exact_decode if exact is None else exact
    im, drafted = _decode(path, channels, None if exact else size)
    if im.size != size:
        # After a draft, first reduce by whole factors while the image stays DRAFT_GAP times
        # the target (Pillow's reducing_gap), then LANCZOS: same filter, fewer source pixels.
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=float(DRAFT_GAP) if drafted else None)
    return im, drafted

def decode_variants(path: StrPath, size: Sequence[int], channels: int = 3,
                    ) -> tuple[PILImage.Image, PILImage.Image | None]:
    """(image, variant): decode_pixels's image and, when the JPEG decoder drafted it, a second
    resampling of the same draft-decoded image (VARIANT_FILTER, no reduce: no second decode),
    else None. classify runs the model on both: where their answers differ, the fast decode's
    own noise may have decided the answer (edge.classify.decode_noise_call)."""
    from PIL import Image

    size = (int(size[0]), int(size[1]))
    im, drafted = _decode(path, channels, None if _exact_decode else size)
    first = im
    if im.size != size:
        first = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=float(DRAFT_GAP) if drafted else None)
    if not drafted:
        return first, None
    return first, im.resize(size, Image.Resampling(VARIANT_FILTER))


def decode_exact(path: StrPath, size: Sequence[int], channels: int = 3) -> PILImage.Image:
    """load_pixels(path, size, channels, exact=True), bit for bit, holding one full-size image
    instead of two: the EXIF rotation and the mode conversion run on strips of rows, each
    strip resized horizontally before the next (Pillow's LANCZOS is a horizontal pass then a
    vertical one, each row of the first pass independent of the others), then the vertical
    pass. classify's confirmations decode this way, so a confirmation's peak memory stays
    below --exact-decode's (a full-size image, its rotated or converted copy)."""
    return _decode(path, channels, None, (int(size[0]), int(size[1])))[0]


# Pillow's ImageOps.exif_transpose: EXIF orientation -> the transpose that makes it upright.
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
            6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}
STRIP_ROWS = 64


def _upright_resized(im: PILImage.Image, size: tuple[int, int], channels: int) -> PILImage.Image:
    """_to_mode(exif_transpose(im), channels) resized to `size` with LANCZOS, bit-identical,
    one strip of upright rows at a time (decode_exact). Modes other than JPEG's (L, RGB,
    CMYK, whose conversions work pixel by pixel) and sizes with no horizontal pass take the
    plain path."""
    from PIL import Image, ImageOps

    orientation = im.getexif().get(0x0112, 1)
    name = _UPRIGHT.get(orientation)
    method = Image.Transpose[name] if name else None
    swap = orientation in (5, 6, 7, 8)
    width, height = im.size
    up_w, up_h = (height, width) if swap else (width, height)
    lanczos = Image.Resampling.LANCZOS
    if method is None and im.mode == ("L" if channels == 1 else "RGB"):
        return im if im.size == size else im.resize(size, lanczos)  # upright, no conversion
    if im.mode not in ("L", "RGB", "CMYK") or up_w == size[0]:
        out = _to_mode(ImageOps.exif_transpose(im) or im, channels)
        return out if out.size == size else out.resize(size, lanczos)
    # Which way upright rows run through the stored image: probe the transpose on 2 pixels.
    probe = Image.new("L", (2, 1) if swap else (1, 2))
    probe.putpixel((1, 0) if swap else (0, 1), 1)
    backwards = bool(method is not None and probe.transpose(method).getpixel((0, 0)))
    rows: PILImage.Image | None = None
    for r0 in range(0, up_h, STRIP_ROWS):
        r1 = min(up_h, r0 + STRIP_ROWS)
        a, b = (up_h - r1, up_h - r0) if backwards else (r0, r1)
        strip = im.crop((a, 0, b, height) if swap else (0, a, width, b))
        if method is not None:
            strip = strip.transpose(method)
        strip = _to_mode(strip, channels).resize((size[0], r1 - r0), lanczos)
        if rows is None:
            rows = Image.new(strip.mode, (size[0], up_h))
        rows.paste(strip, (0, r0))
    assert rows is not None
    return rows if up_h == size[1] else rows.resize(size, lanczos)


def readable_images(paths: Iterable[StrPath], load: Callable[[StrPath], Any], what: str = "images",
                    warn: Callable[[str], object] | None = None) -> list[tuple[StrPath, Any]]:
    """[(path, load(path))] of the images of a folder that can be read: a damaged image is
    skipped with one `warning:` line (as classify does for a folder), and only when none is
    left is it an error (InputError naming how many were tried). Every command that reads an
    image folder (validate --inputs DIR, eval, --calibration DIR, classify) goes through here.
    """
    warn = warn or (lambda m: print(f"warning: {m}", file=sys.stderr))
    out, skipped = [], 0
    for p in paths:
        try:
            out.append((p, load(p)))
        except InputError as e:
            skipped += 1
            warn(f"skipped {e}")
    if not out and skipped:
        raise InputError(f"none of the {skipped} {what} could be read (each is named above)",
                         "pass a folder of readable JPEG, PNG or BMP images")
    return out


def load_image(path: StrPath, channels: int = 3) -> PILImage.Image:
    """Decode an image file into a PIL image in RGB (or L for one channel), upright per EXIF,
    at full resolution. To feed a model use `load_pixels`."""
    return _decode(path, channels, None)[0]


def _draft(im: PILImage.Image, size: tuple[int, int]) -> bool:
    """Ask the JPEG decoder for a reduced scale still >= DRAFT_GAP x `size` (upright w, h);
    True when it will decode smaller than the stored image."""
    if im.format != "JPEG":
        return False
    w, h = size
    try:
        orientation = im.getexif().get(0x0112)
    except Exception:  # a damaged EXIF block: the exact path (exif_transpose) reports or ignores it
        return False
    if orientation in (5, 6, 7, 8):  # stored rotated by 90 degrees: the decoder sees h x w
        w, h = h, w
    before = im.size
    im.draft(im.mode, (DRAFT_GAP * w, DRAFT_GAP * h))
    return im.size != before


def _decode(path: StrPath, channels: int, draft_size: tuple[int, int] | None,
            lean_size: tuple[int, int] | None = None) -> tuple[PILImage.Image, bool]:
    """(image, drafted): `draft_size` (w, h) lets a large JPEG decode at a reduced scale;
    `lean_size` (w, h) returns the image already upright and resized (decode_exact)."""
    from PIL import Image, ImageOps

    from .files import check_input, open_input

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    check_input(path, "image", "image")  # a regular file of bounded size: never a FIFO or device
    try:
        with open_input(path, "image", "image") as f:
            # Pillow only warns between MAX_PIXELS and twice that, then decodes it all (a 168 M
            # pixel GIF header took 12 s and 500 MB in fuzzing): refuse those too. The warning
            # filters are process-wide and catch_warnings is not thread-safe (images decode on
            # worker threads: edge.pipeline), so only the header is read under a lock; the
            # decode itself runs in parallel, after the size check below.
            with _OPEN_LOCK, warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im: PILImage.Image = Image.open(f)
            with im:
                if im.width * im.height > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"{im.width}x{im.height}")
                drafted = draft_size is not None and _draft(im, draft_size)
                im.load()
                if lean_size is not None:
                    return _upright_resized(im, lean_size, channels), False
                im = ImageOps.exif_transpose(im)
    except InputError:
        raise
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not an image") from None
    except FileNotFoundError:
        raise InputError(f"image {path} does not exist") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"image {path} has more than {MAX_PIXELS} pixels",
                         "resize it before classifying") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"cannot read image {path}: {e}", "pass a JPEG, PNG or BMP file") from None
    except Exception as e:  # Pillow's decoders on damaged files: TypeError, struct.error... (fuzzing)
        raise InputError(f"cannot read image {path}: {type(e).__name__}: {e}",
                         "the file is damaged: pass a JPEG, PNG or BMP file") from None
    try:
        return _to_mode(im, channels), drafted
    except (InputError, MemoryError):
        raise
    except Exception as e:
        raise InputError(f"cannot convert image {path} (mode {im.mode}): {type(e).__name__}: {e}",
                         "save it as 8-bit RGB or grayscale") from None


def _to_mode(im: PILImage.Image, channels: int) -> PILImage.Image:
    """A decoded image as 8-bit RGB (or L): 16-bit and float scaled, alpha composited on white."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("L" if channels == 1 else "RGB")


def _per_channel(value: float | Sequence[float], channels: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.size not in (1, channels):
        raise InputError(f"mean/std has {arr.size} values for {channels} channels",
                         "give one value or one per channel")
    return arr


class Preprocessor:
    """Turns a decoded image into the exact tensor one model input expects.

    Built once per model; `__call__` is the per-image hot path.
    """

    def __init__(self, spec: InputSpec, mean: float | Sequence[float] = 128.0,
                 std: float | Sequence[float] = 128.0) -> None:
        self.spec = spec
        self.mean = _per_channel(mean, spec.channels)
        self.std = _per_channel(std, spec.channels)
        if np.any(self.std == 0):
            raise InputError("std must not be 0")
        dtype = spec.dtype
        self.raw = False
        self.lut = None
        if dtype in (np.uint8, np.int8) and spec.scale > 0:
            info = np.iinfo(dtype)
            self.qmin, self.qmax = info.min, info.max
            # pycoral: feed uint8 raw when (mean, std) is the input's own quantization.
            self.raw = bool(dtype == np.uint8 and np.all(np.abs(spec.scale * self.std - 1) < 1e-5)
                        and np.all(np.abs(self.mean - spec.zero_point) < 1e-5))
            if not self.raw:
                # Pixels are 0..255: normalize + quantize once per value, then look it up
                # (one table, or one per channel when mean/std differ by channel).
                px = np.arange(256, dtype=np.float32)[:, None]
                q = np.rint((px - self.mean) / self.std / spec.scale + spec.zero_point)
                table = np.clip(q, self.qmin, self.qmax).astype(dtype)
                self.lut = table[:, 0].copy() if table.shape[1] == 1 else table
        elif dtype in (np.uint8, np.int8):
            raise InputError(f"input '{spec.name}' is {dtype.name} but has no quantization parameters",
                             "classify cannot tell how to scale pixels for it")
        elif dtype not in (np.float32, np.float16, np.float64):
            raise InputError(f"input '{spec.name}' has type {dtype.name}, which is not an image type")

    @property
    def size(self) -> tuple[int, int]:
        return self.spec.width, self.spec.height

    def resize(self, image: PILImage.Image) -> PILImage.Image:
        from PIL import Image

        if image.size != self.size:
            image = image.resize(self.size, Image.Resampling.LANCZOS)
        return image

    def load(self, path: StrPath) -> np.ndarray:
        """Decode and resize an image file (load_pixels); returns an HWC uint8 array."""
        return self.array(load_pixels(path, self.size, self.spec.channels))

    def load_decoded(self, path: StrPath, exact: bool | None = None) -> tuple[np.ndarray, bool]:
        """(HWC uint8 array, drafted): as `load`, and whether the fast (draft) decode made it."""
        image, drafted = decode_pixels(path, self.size, self.spec.channels, exact)
        return self.array(image), drafted

    def load_variants(self, path: StrPath) -> tuple[np.ndarray, np.ndarray | None]:
        """(HWC uint8 array, variant): decode_variants's two resamplings as arrays; the
        variant is None unless the fast (draft) decode made the image."""
        image, variant = decode_variants(path, self.size, self.spec.channels)
        return self.array(image), None if variant is None else self.array(variant)

    def load_exact(self, path: StrPath) -> np.ndarray:
        """The exact decode (decode_exact: as --exact-decode, one full-size image at a time)."""
        return self.array(decode_exact(path, self.size, self.spec.channels))

    def array(self, image: PILImage.Image) -> np.ndarray:
        arr = np.asarray(self.resize(image), dtype=np.uint8)
        return arr[:, :, None] if arr.ndim == 2 else arr

    def __call__(self, hwc: np.ndarray) -> np.ndarray:
        """HWC uint8 pixels -> the model's input tensor (batch of one)."""
        spec = self.spec
        if self.raw:
            x = hwc
        elif self.lut is not None:
            if self.lut.ndim == 1:
                x = np.take(self.lut, hwc)
            else:  # per channel: row = pixel value, column = channel
                x = self.lut[hwc, np.arange(hwc.shape[-1])]
        else:  # float input
            x = ((hwc.astype(np.float32) - self.mean) / self.std).astype(spec.dtype, copy=False)
        if spec.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return x[None] if len(spec.shape) == 4 else x

    def describe(self) -> str:
        how = "raw uint8" if self.raw else "normalized" + (" then quantized" if self.spec.scale else "")
        return (f"{self.spec.width}x{self.spec.height} {self.spec.layout} {self.spec.dtype.name}, "
                f"mean {self.mean.tolist()} std {self.std.tolist()} ({how})")


def list_images(paths: Iterable[str]) -> ImageList:
    """Expand files and folders (non-recursive, sorted) into a list of image paths."""
    import os

    out = ImageList()
    for p in paths:
        if os.path.isdir(p):
            found = image_files(p)
            if not found:
                raise InputError(f"folder {p} holds no images", f"expected files ending in {', '.join(IMAGE_SUFFIXES[:4])}...")
            out.extend(found)
            out.from_folder.update(found)
        else:
            out.append(p)
    return out


class ImageList(list):
    """Image paths; `from_folder` holds those found in a folder (an unreadable one is skipped
    with a warning, while a file named on the command line that cannot be read is an error)."""

    def __init__(self, *a: Iterable[str]) -> None:
        super().__init__(*a)
        self.from_folder: set[str] = set()


def image_files(folder: str, warn: Callable[[str], object] | None = None) -> list[str]:
    """Sorted image files of `folder` (not recursive): hidden names (`.x`, macOS `._x.jpg`) left
    out; entries that are not regular files (a dangling link, a FIFO) named in a warning, skipped."""
    import os
    import stat
    import sys

    from .files import printable

    warn = warn or (lambda m: print(f"warning: {m}", file=sys.stderr))
    out = []
    for n in sorted(os.listdir(folder)):
        if n.startswith(".") or not n.lower().endswith(IMAGE_SUFFIXES):
            continue
        path = os.path.join(folder, n)
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            warn(f"skipped {printable(path)}: {e.strerror}")
            continue
        if not stat.S_ISREG(mode):
            warn(f"skipped {printable(path)}: not a regular file")
            continue
        out.append(path)
    return out
