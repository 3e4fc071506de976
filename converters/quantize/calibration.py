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
Images are decoded and resized by `edge.preprocess.load_pixels`, with the same draft decode and LANCZOS filter
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

Held-out samples: when the calibration set is large enough, every fifth sample (the 5th,
10th, ... in sorted order) is held back from calibration (`split_holdout`) and int8
validation runs on those, so a verdict is not reached on data the quantizer fitted its
ranges to. At least MIN_HOLDOUT held-out samples are needed (so 40 samples); with fewer,
every sample calibrates and the summary (`held_out.count` 0, with the reason) makes the
verdict say it was reached on calibration data. `.summary()["held_out"]` records which
samples were held back (file names, or sample indices of the --data stacks), so
validation uses exactly those.
"""

import hashlib
import os

import numpy as np

from edge import console
from edge.errors import InputError
from edge.preprocess import IMAGE_SUFFIXES, load_pixels

DEFAULT_MEAN = 127.5
DEFAULT_STD = 127.5
HOLDOUT_EVERY = 5                 # every fifth sample is held back for validation ...
MIN_HOLDOUT = 8                   # ... when that holds back at least this many


def split_holdout(n):
    """(calibration indices, held-out indices) of `n` samples in order: every HOLDOUT_EVERY-th
    held out when that gives at least MIN_HOLDOUT, else every sample calibrates."""
    held = list(range(HOLDOUT_EVERY - 1, n, HOLDOUT_EVERY))
    if len(held) < MIN_HOLDOUT:
        return list(range(n)), []
    kept = set(held)
    return [i for i in range(n) if i not in kept], held


def holdout_summary(total, held, unit, names=None, enabled=True):
    """The sidecar's record of what was held back (see the module docstring)."""
    if not enabled:
        return {"count": 0, "of": total, "reason": "holding samples back was turned off: "
                "int8 is validated on calibration data"}
    if not held:
        return {"count": 0, "of": total, "reason": (
            f"{total} {unit} are too few to hold any back (every {_nth(HOLDOUT_EVERY)} needs "
            f"{HOLDOUT_EVERY * MIN_HOLDOUT} for {MIN_HOLDOUT}): int8 is validated on calibration data")}
    out = {"count": len(held), "of": total, "rule": f"every {_nth(HOLDOUT_EVERY)} {unit[:-1]}"}
    out["files" if names is not None else "indices"] = names if names is not None else list(held)
    return out


def holdout_text(summary):
    """One line for progress output: what was held back, or why nothing was."""
    h = (summary or {}).get("held_out") or {}
    if not h:
        return ""
    if not h.get("count"):
        return "calibration: " + h.get("reason", "nothing held back")
    return (f"calibration: {h['count']} of {h['of']} samples ({h['rule']}) held back for "
            f"validation, {h['of'] - h['count']} calibrate")


def _nth(n):
    return {2: "second", 3: "third", 4: "fourth", 5: "fifth"}.get(n, f"{n}th")


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
    h, w = spec["size"]
    im = load_pixels(path, (w, h), spec["channels"])
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

    def __init__(self, folder, files, spec, tensors, held_out=None, total=None):
        self.folder = os.fspath(folder)
        self.files = list(files)
        self.spec = spec
        self.tensors = tensors              # float32 (1, H, W, C) or (1, C, H, W), the spec's layout
        self.held_out = list(held_out or [])  # image files kept for validation, never calibrated on
        self.holdout = True                 # False: holding back was turned off (benchmarks)
        self.total = len(self.files) + len(self.held_out) if total is None else total

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
                "preprocessing": {k: self.spec[k] for k in ("size", "layout", "mean", "std")},
                "held_out": holdout_summary(self.total, self.held_out, "images",
                                            [os.path.basename(f) for f in self.held_out],
                                            self.holdout)}


def load_calibration(folder, spec, count=100, input_shape=None, layout=None, progress=None,
                     holdout=True):
    """Load up to `count` images of `folder` through `spec` into a CalibrationSet, every
    fifth held back for validation when there are enough (`holdout`, see split_holdout).

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
    from edge.preprocess import readable_images

    spec = resolve_spec(spec, input_shape, layout)
    listed = list_calibration_images(folder, count)
    keep, held = split_holdout(len(listed)) if holdout else (list(range(len(listed))), [])
    files = [listed[i] for i in keep]
    n = len(files)
    with console.progress(n, "calibration: loading images", "image",
                          enabled=console.shows_progress(progress)) as bar:
        def load(f):
            bar.step()
            return preprocess_image(f, spec)

        # a damaged image is skipped with a warning; only a folder with none readable is an error
        loaded = readable_images(files, load, "calibration images")
    used = [f for f, _ in loaded]
    if progress:
        skipped = n - len(used)
        progress(f"calibration: {len(used)} images used" + (f" ({skipped} damaged skipped)" if skipped else ""))
    cal = CalibrationSet(folder, used, spec, [t for _, t in loaded], [listed[i] for i in held], len(listed))
    cal.holdout = bool(holdout)
    if progress:
        progress(holdout_text(cal.summary()))
    return cal


def load_data(path):
    """{input name: array} from an .npz (or .npy) file, read by edge.readers.read_arrays (no
    pickles, sizes checked before inflating). InputError (one line) for a file with no arrays,
    an empty stack, or NaN / infinity in a float array."""
    import numpy as np

    from edge.files import printable
    from edge.readers import read_arrays

    hint = "write it with numpy.savez(path, input_name=array, ...)"
    data = read_arrays(path, "--data", hint=hint)
    shown = printable(os.path.basename(os.fspath(path)))
    if not data:
        raise InputError(f"--data {shown} holds no arrays", hint)
    for key, arr in data.items():
        if arr.size == 0:
            raise InputError(f"--data {shown}: array '{printable(key)}' is empty (shape "
                             f"{list(arr.shape)})", "give at least one sample")
        if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
            if not np.all(np.isfinite(arr)):
                raise InputError(f"--data {shown}: array '{printable(key)}' holds NaN or infinity",
                                 "give finite values only")
    return data


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

    def __init__(self, path, sha256, inputs, samples, held_out=(), stacked_keys=(), total=None):
        self.path = os.fspath(path)
        self.sha256 = sha256
        self.inputs = list(inputs)          # [(name, shape with None for open dims, dtype)]
        self.samples = samples
        self.held_out = list(held_out)      # sample indices kept for validation
        self.stacked_keys = list(stacked_keys)  # the file's keys that are stacks of samples
        self.holdout = True                 # False: holding back was turned off
        self.total = len(samples) + len(self.held_out) if total is None else total
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
                           for (name, _, _), x in zip(self.inputs, first)},
                "held_out": dict(holdout_summary(self.total, self.held_out, "samples",
                                                 enabled=self.holdout),
                                 **({"stacked_keys": self.stacked_keys} if self.held_out else {}))}


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


def load_array_calibration(path, inputs, count=None, progress=None, holdout=True):
    """Calibration samples for a model's inputs from an .npz (`--data`), checked one by one.

    Args:
      path: the .npz file (arrays keyed by input name; no pickles).
      inputs: [(name, shape with None for open dimensions, numpy dtype)] of the model's inputs.
      count: at most this many samples (the first ones); None for all.
      progress: callable(str) or None.
      holdout: hold every fifth sample back for validation when there are enough.
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
    raw = load_data(path)
    key_of = data_for_inputs({k: k for k in raw}, names)   # input name -> the file's key
    data = data_for_inputs(raw, names)
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
    keep, held = split_holdout(n) if holdout else (list(range(n)), [])
    samples = [[np.ascontiguousarray(s[i % len(s)]) for s in per_input] for i in keep]
    stacked = [key_of[nm] for nm, s in zip(names, per_input) if len(s) > 1]
    if progress:
        progress(f"calibration: {len(keep)} samples from {base} "
                 f"({', '.join(f'{nm}: {list(x.shape)}' for nm, x in zip(names, samples[0]))})")
    cal = ArrayCalibration(path, sha256_of(path), inputs, samples, held, stacked, n)
    cal.holdout = bool(holdout)
    if progress:
        progress(holdout_text(cal.summary()))
    return cal


def constant_inputs(cal):
    """[(input index, value)] of the inputs whose every calibration value is one number across
    all samples (all zeros, one black image repeated): a quantizer derives a zero range from
    such data, and the int8 model it makes is degenerate (or crashes the runtime)."""
    lo = hi = None
    for sample in cal.representative_dataset():
        arrays = [np.asarray(x) for x in sample]
        mins = [float(a.min()) if a.size else 0.0 for a in arrays]
        maxs = [float(a.max()) if a.size else 0.0 for a in arrays]
        lo = mins if lo is None else [min(a, b) for a, b in zip(lo, mins)]
        hi = maxs if hi is None else [max(a, b) for a, b in zip(hi, maxs)]
    if lo is None:
        return []
    return [(i, lo[i]) for i in range(len(lo)) if lo[i] == hi[i]]


def describe(cal):
    """The calibration data as the user named it: the --data file or the --calibration folder."""
    from edge.files import printable

    if isinstance(cal, ArrayCalibration):
        return f"--data {printable(os.path.basename(cal.path))}"
    return f"--calibration {printable(getattr(cal, 'folder', '?'))}"


def validation_holdout(summary, folder=None, data_path=None):
    """What int8 validation runs on, from the calibration record of the artefact's sidecar
    (`summary()`, with its "held_out" part).

    Returns (image paths or None, {key: array} or None, note): the held-out images of
    `folder`, or the --data file `data_path` with its stacks cut to the held-out samples;
    `note` says on what the verdict is reached ("" when the record says nothing of it).
    """
    h = (summary or {}).get("held_out")
    if not h:
        return None, None, ""
    on_cal = "verdict reached on calibration data: "
    if not h.get("count"):
        return None, None, on_cal + h.get("reason", "nothing was held back")
    held = f"{h['count']} held-out samples ({h['rule']} of {h['of']}) the quantizer never saw"
    if summary.get("kind") == "images" and folder:
        files = [os.path.join(os.fspath(folder), os.path.basename(f)) for f in h.get("files", [])]
        present = [f for f in files if os.path.isfile(f)]
        if len(present) == len(files) and present:
            return present, None, f"validated on {held}"
        return None, None, on_cal + "the held-out images are no longer in the folder"
    if summary.get("kind") == "arrays" and data_path:
        raw = load_data(data_path)
        idx = list(h.get("indices", []))
        keys = set(h.get("stacked_keys", []))
        if idx and all(k in raw and len(raw[k]) > max(idx) for k in keys):
            return None, {k: (v[idx] if k in keys else v) for k, v in raw.items()}, \
                f"validated on {held}"
        return None, None, on_cal + "the held-out samples are no longer in the file"
    return None, None, ""
