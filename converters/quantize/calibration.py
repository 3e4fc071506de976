"""Calibration data for full-integer quantization: real images through a preprocessing spec,
or the user's own input arrays (`--data FILE.npz`) for models that take no image.

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

Arrays (`load_array_calibration`, for audio, sensor or embedding models; the float TFLite
quantizer takes them): the `--data` file of validation, with the same contract
(`converters.validation.signature`): arrays keyed by input name (or by the name without
TensorFlow's `serving_default_` and `:0`, `data_for_inputs`), one sample, or a stack of
samples along a new axis 0. Every input gets its own array; shapes (open dimensions aside)
and dtypes must fit the model's inputs. The ArrayCalibration it returns has the interface
above: `.arrays()` and `.tensors` give the first input's samples, `.representative_dataset`
yields one list per sample with an array per input (in the model's input order), and
`.summary()` records the file, its sha256, the sample count and each input's shape.
"""

import hashlib
import os

import numpy as np

from edge import console
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


class _Samples:
    """What every calibration set shares: `.tensors` (the first input's samples), len, arrays()."""

    tensors = ()

    def __len__(self):
        return len(self.tensors)

    def arrays(self):
        """Yield the first (for images, the only) input's samples, float32 with batch 1."""
        yield from self.tensors


class CalibrationSet(_Samples):
    """Preprocessed calibration images, loaded once (small: count x H x W x C floats)."""

    unit = "images"                         # what one sample is, for progress lines

    def __init__(self, folder, files, spec, tensors):
        self.folder = os.fspath(folder)
        self.files = list(files)
        self.spec = spec
        self.tensors = tensors              # float32 (1, H, W, C) or (1, C, H, W), the spec's layout

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
    with console.progress(len(files), "calibration: loading images", "image",
                          enabled=console.shows_progress(progress)) as bar:
        for f in files:
            tensors.append(preprocess_image(f, spec))
            bar.step()
    if progress:
        progress(f"calibration: {len(files)} images loaded")
    return CalibrationSet(folder, files, spec, tensors)


def load_data(path):
    """{input name: array} from an .npz file (no pickles)."""
    if not os.path.isfile(path):
        raise InputError(f"--data {path} is not a file", "pass an .npz of arrays keyed by input name")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("not an .npz archive")
            return {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read --data {path}: {e}",
                         "write it with numpy.savez(path, input_name=array, ...)") from None


def data_samples(arr, shape):
    """The samples of a --data array for an input of sample shape `shape`: a list."""
    if arr.ndim == len(shape) + 1:
        return [arr[i] for i in range(arr.shape[0])]
    return [arr]


def _bare_name(name):
    """A TensorFlow-made input name without its signature mangling: 'serving_default_x:0' -> 'x'."""
    n = str(name)
    if n.startswith("serving_default_"):
        n = n[len("serving_default_"):]
    head, colon, tail = n.rpartition(":")
    return head if colon and tail.isdigit() else n


def data_for_inputs(data, names):
    """`data` ({key: array}, from --data) keyed by the model's input names. A key that is no
    input name is taken for the input of the same name once TensorFlow's mangling is dropped
    from both ('audio' for 'serving_default_audio:0', as the TFLite converter and onnx2tf name
    inputs, and 'serving_default_audio:0' for 'audio', as tf2onnx names the ONNX made from that
    TFLite), so one file serves a model and what is made from it; other keys are left for the
    caller to refuse."""
    out = {}
    for key, value in data.items():
        hits = [n for n in names if _bare_name(n) == _bare_name(key)] if key not in names else []
        target = hits[0] if len(hits) == 1 and hits[0] not in data else key
        out[target] = value
    return out


class ArrayCalibration(_Samples):
    """Calibration samples from an .npz of input arrays (`--data`), checked against the model.

    `samples` is a list with one entry per sample: a list of arrays, one per model input, in
    the model's input order, each shaped like that input (batch included).
    """

    unit = "samples"

    def __init__(self, path, sha256, inputs, samples):
        self.path = os.fspath(path)
        self.sha256 = sha256
        self.inputs = list(inputs)          # [(name, shape with None for open dims, dtype)]
        self.samples = samples
        self.spec = {}                      # no preprocessing: the arrays are the inputs
        self.tensors = [s[0] for s in samples]

    def representative_dataset(self):
        """A generator for TFLite's calibrator: one list per sample, an array per input."""
        for s in self.samples:
            yield list(s)

    def summary(self):
        """What to record in provenance: the file, its hash, how many samples, which shapes."""
        first = self.samples[0]
        return {"kind": "arrays", "source": os.path.abspath(self.path),
                "file": os.path.basename(self.path), "sha256": self.sha256, "count": len(self),
                "inputs": {name: {"shape": list(x.shape), "dtype": x.dtype.name}
                           for (name, _, _), x in zip(self.inputs, first)}}


def _shape_text(shape):
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _input_text(name, shape, dtype):
    return f"input '{name}' takes {np.dtype(dtype).name}{_shape_text(shape)}"


def _check_dtype(arr, name, shape, dtype, path):
    """`arr` as `dtype`: any float array feeds a float input; other inputs take their own dtype."""
    want = np.dtype(dtype)
    if np.issubdtype(want, np.floating) and np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(want, copy=False)
        if not np.all(np.isfinite(out)):
            raise InputError(f"--data {os.path.basename(path)}: array '{name}' holds NaN or infinity "
                             f"(or values beyond {want.name})", "calibrate on finite values only")
        return out
    if arr.dtype == want:
        return arr
    raise InputError(f"--data {os.path.basename(path)}: array '{name}' is {arr.dtype.name}, "
                     f"{_input_text(name, shape, dtype)}",
                     f"convert it, e.g. numpy.savez(..., {name}=x.astype(numpy.{want.name}))"
                     if name.isidentifier() else f"convert it to {want.name}")


def load_array_calibration(path, inputs, count=None, progress=None):
    """Calibration samples for a model's inputs from an .npz (`--data`), checked one by one.

    Args:
      path: the .npz file (arrays keyed by input name; no pickles).
      inputs: [(name, shape with None for open dimensions, numpy dtype)] of the model's inputs.
      count: at most this many samples (the first ones); None for all.
      progress: callable(str) or None.
    Returns:
      ArrayCalibration. InputError (one line, naming the input, what it takes and what the
      file holds) for an unknown key, a missing input, a wrong shape or dtype, NaN/infinity,
      or stacks of different lengths.
    """
    from converters.artefact import sha256_of

    if not path:
        raise InputError("calibration from arrays needs --data FILE.npz",
                         "arrays keyed by input name; edgeport never calibrates on random data")
    path = os.fspath(path)
    names = [n for n, _, _ in inputs]
    data = data_for_inputs(load_data(path), names)
    base = os.path.basename(path)
    wants = ", ".join(_input_text(n, s, d).replace("input ", "", 1) for n, s, d in inputs)
    unknown = [k for k in data if k not in names]
    if unknown:
        raise InputError(f"--data {base} has an array '{unknown[0]}' that is no input of the model",
                         f"key the arrays by input name: {wants}")
    per_input = []
    for name, shape, dtype in inputs:
        if name not in data:
            raise InputError(f"--data {base} has no array for {_input_text(name, shape, dtype)}",
                             f"every input needs its own array: {wants}")
        arr = data[name]
        if arr.ndim not in (len(shape), len(shape) + 1):
            raise InputError(f"--data {base}: array '{name}' has shape {list(arr.shape)}, "
                             f"{_input_text(name, shape, dtype)}",
                             "give one sample, or a stack of samples along a new first axis")
        arr = _check_dtype(arr, name, shape, dtype, path)
        samples = data_samples(arr, shape)
        got = list(samples[0].shape)
        if len(got) != len(shape) or any(d is not None and d != g for d, g in zip(shape, got)):
            raise InputError(f"--data {base}: array '{name}' has samples of shape {got} "
                             f"(array {list(arr.shape)}), {_input_text(name, shape, dtype)}",
                             "one sample, or a stack of samples along a new first axis")
        per_input.append(samples)
    lengths = {len(s) for s in per_input if len(s) > 1}
    if len(lengths) > 1:
        raise InputError(f"--data {base}: the inputs' stacks hold different numbers of samples "
                         f"({', '.join(f'{n}: {len(s)}' for n, s in zip(names, per_input))})",
                         "give every input the same number of samples (or one sample to reuse)")
    n = max(len(s) for s in per_input)
    if count is not None:
        if count < 1:
            raise InputError("--calibration-count must be at least 1")
        n = min(n, count)
    samples = [[np.ascontiguousarray(s[i % len(s)]) for s in per_input] for i in range(n)]
    if progress:
        progress(f"calibration: {n} samples from {base} "
                 f"({', '.join(f'{nm}: {list(x.shape)}' for nm, x in zip(names, samples[0]))})")
    return ArrayCalibration(path, sha256_of(path), inputs, samples)
