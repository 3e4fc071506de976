"""Calibration data for full-integer quantization: real images through a preprocessing spec.

Contract (shared by every quantizing converter, TF and PyTorch):

    cal = load_calibration(options.calibration, spec, count=options.calibration_count,
                           progress=options.progress)
    for x in cal.arrays(): ...             # float32, shape (1, H, W, C) or (1, C, H, W)
    converter.representative_dataset = cal.representative_dataset   # TFLite: yields [x]
    metadata["calibration"] = cal.summary()

`spec` is the preprocessing dict of ConvertOptions: {"size": [h, w], "layout": "NHWC"|"NCHW",
"mean": [..], "std": [..], "channels": 1|3}, pixels in 0..255, input = (pixel - mean) / std.
Images are decoded with `edge.preprocess.load_image` and resized with the same LANCZOS filter
the device uses, so calibration sees what the device will feed. There is no fallback to
random data: a folder without images is an error.
"""

import hashlib
import os

import numpy as np

from edge.errors import InputError
from edge.preprocess import IMAGE_SUFFIXES, load_image

DEFAULT_MEAN = 127.5
DEFAULT_STD = 127.5


def resolve_spec(spec, input_shape=None, layout=None):
    """A complete preprocessing spec from a partial one and a model's input shape.

    Args:
      spec: dict (may be None or partial) with size/layout/mean/std/channels.
      input_shape: the model's image input shape, e.g. (1, 224, 224, 3) or (None, 3, 32, 32),
        used for whatever `spec` leaves out.
      layout: the model's layout when known ("NHWC" or "NCHW").
    Returns:
      dict with size [h, w], layout, channels, mean [..], std [..] (lists of floats).
    """
    spec = dict(spec or {})
    shape = tuple(input_shape) if input_shape is not None else None
    lay = spec.get("layout") or layout
    if shape is not None and len(shape) == 4 and not lay:
        lay = "NCHW" if shape[1] in (1, 3, 4) and shape[-1] not in (1, 3, 4) else "NHWC"
    lay = (lay or "NHWC").upper()
    if lay not in ("NHWC", "NCHW"):
        raise InputError(f"layout must be NHWC or NCHW, not {lay}")
    size = spec.get("size")
    channels = spec.get("channels")
    if shape is not None and len(shape) == 4:
        h, w, c = (shape[1], shape[2], shape[3]) if lay == "NHWC" else (shape[2], shape[3], shape[1])
        if not size and h and w and h > 0 and w > 0:
            size = [int(h), int(w)]
        if not channels and c and c > 0:
            channels = int(c)
    if not size:
        raise InputError("the model's input size is unknown",
                         "give it with --size H W (and --mean/--std for normalization)")
    if len(size) == 1:
        size = [size[0], size[0]]
    channels = int(channels or 3)
    if channels not in (1, 3):
        raise InputError(f"image inputs with {channels} channels are not supported", "use 1 or 3")
    mean = _values(spec.get("mean", DEFAULT_MEAN), channels, "mean")
    std = _values(spec.get("std", DEFAULT_STD), channels, "std")
    if any(s == 0 for s in std):
        raise InputError("std must not be 0")
    out = dict(spec)
    out.update(size=[int(size[0]), int(size[1])], layout=lay, channels=channels, mean=mean, std=std)
    return out


def _values(v, channels, what):
    arr = [float(x) for x in np.asarray(v, dtype=np.float64).reshape(-1)]
    if len(arr) not in (1, channels):
        raise InputError(f"--{what} has {len(arr)} values for {channels} channels",
                         "give one value or one per channel")
    return arr


def list_calibration_images(folder, count=None):
    """Sorted image files of `folder` (not recursive), at most `count`; InputError if none."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError(f"calibration folder {folder} does not exist or is not a folder",
                         "pass --calibration DIR with representative images")
    from edge.preprocess import image_files

    files = image_files(folder)  # hidden and non-regular entries left out
    if not files:
        raise InputError(f"calibration folder {folder} holds no images",
                         f"put representative images ({', '.join(IMAGE_SUFFIXES[:4])}...) in it; "
                         "edgeport never calibrates on random data")
    if count is not None:
        if count < 1:
            raise InputError("--calibration-count must be at least 1")
        files = files[:count]
    return files


def preprocess_image(path, spec):
    """One image file -> float32 tensor (1, H, W, C) or (1, C, H, W) per a resolved spec."""
    from PIL import Image

    h, w = spec["size"]
    im = load_image(path, spec["channels"])
    if im.size != (w, h):
        im = im.resize((w, h), Image.LANCZOS)
    arr = np.asarray(im, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    x = (arr - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    if spec["layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


class CalibrationSet:
    """Preprocessed calibration images, loaded once (small: count x H x W x C floats)."""

    def __init__(self, folder, files, spec, tensors):
        self.folder = os.fspath(folder)
        self.files = list(files)
        self.spec = spec
        self.tensors = tensors

    def __len__(self):
        return len(self.tensors)

    def arrays(self):
        """Yield each sample as a float32 array with batch 1, in the spec's layout."""
        yield from self.tensors

    def representative_dataset(self):
        """A generator for tf.lite.TFLiteConverter.representative_dataset (one input)."""
        for x in self.tensors:
            yield [x]

    def stacked(self):
        """All samples as one (N, ...) array."""
        return np.concatenate(self.tensors, axis=0)

    def summary(self):
        """What to record in provenance: where the calibration came from and how much."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(os.path.basename(f).encode())
            with open(f, "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
        return {"source": os.path.abspath(self.folder), "count": len(self.files),
                "files_sha256": h.hexdigest(), "kind": "images",
                "preprocessing": {k: self.spec[k] for k in ("size", "layout", "mean", "std")}}


def load_calibration(folder, spec, count=100, input_shape=None, layout=None, progress=None):
    """Load up to `count` images of `folder` through `spec` into a CalibrationSet.

    Args:
      folder: the --calibration folder; InputError when it is missing or holds no images.
      spec: preprocessing dict (partial is fine when `input_shape` supplies the rest).
      count: at most this many images (sorted by name, so runs are reproducible).
      input_shape / layout: the model's input, to complete `spec` (see resolve_spec).
      progress: callable(str) for progress lines (e.g. ConvertOptions.progress), or None.
    """
    if not folder:
        raise InputError("full-integer quantization needs calibration images",
                         "pass --calibration DIR (representative images) and the preprocessing "
                         "flags; edgeport never calibrates on random data")
    spec = resolve_spec(spec, input_shape, layout)
    files = list_calibration_images(folder, count)
    tensors = []
    n = len(files)
    step = max(1, n // 10)
    for i, f in enumerate(files, 1):
        tensors.append(preprocess_image(f, spec))
        if progress and (i == n or i % step == 0):
            progress(f"calibration: {i}/{n} images loaded")
    return CalibrationSet(folder, files, spec, tensors)
