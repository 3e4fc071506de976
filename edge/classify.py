"""Classification on a TFLite interpreter: rank the output, take the top-k classes (dequantized).

    classifier, info = open_classifier(model, *preprocessing_of(model), device="auto")
    labels = fitting_labels(labels_path, classifier.num_classes, warn)
    for r in classify_images(classifier, list_images(paths), count=5, k=3, on_skip=warn): ...

The library work of the `classify` command (edgeport/cli/classify.py parses and prints).
"""

from __future__ import annotations

import time
from collections import namedtuple
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .errors import InputError
from .preprocess import Preprocessor, input_spec

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from _typeshed import StrPath

Class = namedtuple("Class", ["id", "score"])
Class.__doc__ = "One classification result: class id and score."


def top_k_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` largest values, largest first (ties: lower index first)."""
    n = values.size
    k = min(int(k), n)
    if k <= 0:
        return np.empty(0, np.intp)
    idx = np.argpartition(values, n - k)[n - k:] if k < n else np.arange(n)
    # lexsort's last key is primary: value ascending, then index descending; reversed, this
    # is value descending, index ascending. No negation: unsigned values would wrap.
    return idx[np.lexsort((-idx, values[idx]))[::-1]]


def top_k(scores: np.ndarray, k: int = 1, threshold: float = 0.0) -> list[Class]:
    """Classes with a score above `threshold`, best first, at most `k` of them."""
    return [Class(int(i), float(scores[i])) for i in top_k_indices(scores, k) if scores[i] > threshold]


def preprocessing_of(model_path: StrPath, mean: float | Sequence[float] | None = None,
                     std: float | Sequence[float] | None = None,
                     layout: str | None = None) -> tuple[Any, Any, str | None]:
    """(mean, std, layout) for a model: the given values, else its sidecar's, else 128/128."""
    from .sidecar import read_sidecar

    spec = read_sidecar(model_path).get("preprocessing") or {}
    return (mean or spec.get("mean", 128.0), std or spec.get("std", 128.0),
            layout or spec.get("layout"))


# Confirm close calls. The fast (draft) decode moves a model's scores a little; on a photo
# whose answer that noise can change, the two decodes may disagree. How far the noise reaches
# depends on the model (its output steps, its sensitivity) and on the photo, so it is measured
# on each drafted photo: the model also runs on a second resampling of the same draft-decoded
# image (edge.preprocess.decode_variants: a box average, no second decode), and the photo is
# decoded again exactly when decode_noise_call says the two runs disagree. Measured with
# scripts/bench_photos.py on the 127 held-out photos at 12 MP (docs/benchmarks.md): k = 0
# (confirm when the variant does not rank the fast top-1 strictly first, or on a tie) gives
# 126/127 with Coral's mobilenet_v1_0.25_128_quant (22 photos confirmed) and 126/127 with
# the reference EfficientNet-Lite0 int8 (10 confirmed); k = 0.5 gives 126 and 127 but
# confirms 27 and 18, and only k = 3 reaches 127 with mobilenet (61 confirmed).
CONFIRM_K = 0.0

def decode_noise_call(first: np.ndarray, second: np.ndarray, k: float = CONFIRM_K) -> bool:
    """True when a drafted photo's answer may be the decode's noise: the model's output on the
    variant (`second`) does not rank the fast path's top-1 (of `first`) strictly above every
    other class, or `first`'s top-1 leads its runner-up by no more than `k` times how far that
    lead moved between the two. A lead is over whichever class is second in each output, so
    ties and class order do not matter; units cancel (raw quantized integers, float scores)."""
    a = np.asarray(first, np.float64).reshape(-1)
    b = np.asarray(second, np.float64).reshape(-1)
    if a.size < 2:
        return False
    top = int(np.argmax(a))  # the fast answer (Classifier.classes: lowest index on a tie)
    lead_a = a[top] - np.delete(a, top).max()
    lead_b = b[top] - np.delete(b, top).max()
    return bool(lead_b <= 0 or lead_a <= k * abs(lead_a - lead_b) * (1 + 1e-6))  # 1e-6: rounding


class Classifier:
    """One image-classification model on one interpreter: preprocess, invoke, top-k."""

    def __init__(self, interpreter: Any, mean: float | Sequence[float] = 128.0,
                 std: float | Sequence[float] = 128.0, layout: str | None = None) -> None:
        self.interpreter = interpreter
        inputs = interpreter.get_input_details()
        if len(inputs) != 1:
            raise InputError(f"classify takes models with one input; this one has {len(inputs)}")
        self.input_detail = inputs[0]
        self.output_detail = interpreter.get_output_details()[0]
        self.preprocess = Preprocessor(input_spec(self.input_detail, layout), mean, std)
        self.num_classes = int(np.prod(self.output_detail["shape"]))
        self._in = self.input_detail["index"]
        self._out = self.output_detail["index"]
        scale, zero_point = self.output_detail.get("quantization", (0.0, 0))
        integer = np.issubdtype(np.dtype(self.output_detail["dtype"]), np.integer)
        self._quant = (scale, zero_point) if integer and scale > 0 else None

    def set_input(self, tensor: np.ndarray) -> None:
        self.interpreter.set_tensor(self._in, tensor)

    def invoke(self) -> float:
        """Run the model once; returns the time it took in seconds."""
        start = time.perf_counter()
        self.interpreter.invoke()
        return time.perf_counter() - start

    def classes(self, k: int = 1, threshold: float = 0.0) -> list[Class]:
        out = self.interpreter.get_tensor(self._out).reshape(-1)
        # Rank the raw values (dequantization is monotonic, scale > 0), convert only the top k.
        top = (int(out.argmax()),) if k == 1 else top_k_indices(out, k).tolist()
        if self._quant:
            scale, zero_point = self._quant
            scores = [scale * (int(out[i]) - zero_point) for i in top]
        else:
            scores = [float(out[i]) for i in top]
        return [Class(i, s) for i, s in zip(top, scores) if s > threshold]

    def lead(self) -> float:
        """How far the last run's top-1 leads its top-2: in output quantization steps for a
        quantized output, else relative to the top-1's magnitude (float scores). inf for a
        single-class output."""
        out = self.interpreter.get_tensor(self._out).reshape(-1)
        if out.size < 2:
            return float("inf")
        first, second = (float(out[i]) for i in top_k_indices(out, 2))
        if self._quant:
            return first - second  # raw integers: one step each
        return (first - second) / max(abs(first), 1e-12)

    def output(self) -> np.ndarray:
        """The last run's raw output, flattened (a copy)."""
        return np.array(self.interpreter.get_tensor(self._out)).reshape(-1)

    def classify(self, hwc: np.ndarray, k: int = 1, threshold: float = 0.0) -> list[Class]:
        """Decoded HWC pixels -> top-k classes (one inference)."""
        interpreter = self.interpreter
        interpreter.set_tensor(self._in, self.preprocess(hwc))
        interpreter.invoke()
        return self.classes(k, threshold)


def class_vector_warning(interpreter: Any) -> str:
    """'' when the model's output is one class vector ([N] or [1, N]); else a warning saying
    that the class ids printed index a flattened output that holds no classes."""
    outs = interpreter.get_output_details()
    described = ", ".join(f"{d['name']}{list(int(x) for x in d['shape'])}" for d in outs)
    first = [int(x) for x in outs[0]["shape"]] if outs else []
    big = [x for x in first if x > 1]
    if len(outs) == 1 and len(big) <= 1:
        return ""
    return (f"the model has no class-vector output ({len(outs)} output(s): {described}); "
            "the ids below index its first output flattened, which may not be classes "
            "(a detector, landmark or segmentation model needs its own decoding)")


@dataclass
class ImageResult:
    """One image classified: its path, the time of each inference (ms) and the top classes."""

    path: str
    times_ms: list[float]
    classes: list[Class]
    decode: str = "exact"   # "draft", "draft, confirmed exact" or "exact" (DECODES)


DECODES = ("draft", "draft, confirmed exact", "exact")


def open_classifier(model: str, mean: float | Sequence[float] = 128.0,
                    std: float | Sequence[float] = 128.0, layout: str | None = None,
                    device: str | None = "auto", runtime: str | None = None,
                    num_threads: int | str | None = None,
                    input_shapes: Mapping[str | None, Sequence[int]] | None = None,
                    ) -> tuple[Classifier, dict[str, Any]]:
    """A Classifier for `model` (MODEL@usb:0 picks a device) and the interpreter's info.
    mean/std/layout as preprocessing_of gives them (the flags', else the sidecar's);
    `input_shapes` ({input name or None: shape}, parsed from --input-shapes) fixes open input
    dimensions."""
    from .interpreter import make_interpreter

    interpreter, info = make_interpreter(model, device=device, runtime=runtime,
                                         num_threads=num_threads)
    if input_shapes:
        resize_input(interpreter, input_shapes)
    return Classifier(interpreter, mean, std, layout=layout), info


def resize_input(interpreter: Any, shapes: Mapping[str | None, Sequence[int]]) -> None:
    """Give the model's one input the shape in `shapes` (keyed by its name, or None for a
    bare shape) and allocate again; InputError when the shapes name no input or do not fit."""
    from .errors import first_line
    from .files import printable

    d = interpreter.get_input_details()[0]
    shape = shapes.get(None) or shapes.get(d["name"])
    if shape is None:
        raise InputError(f"--input-shapes names no input of the model (its input: {printable(d['name'])})")
    if len(shapes) > 1:
        raise InputError(f"--input-shapes gives {len(shapes)} shapes; the model has one input")
    interpreter.resize_tensor_input(d["index"], list(shape))
    try:
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        raise InputError(f"the model does not take input shape {list(shape)}: {first_line(e)}") from None


def fitting_labels(path: str | None, num_classes: int,
                   warn: Callable[[str], None]) -> dict[int, str]:
    """The labels at `path` ({} without one), checked against the model's classes: a count
    off by other than the usual background class raises InputError (every name printed would
    be wrong); a smaller mismatch is passed to `warn`."""
    from .labels import check_labels, read_labels

    labels = read_labels(path) if path else {}
    warning = check_labels(labels, num_classes)
    if labels and max(labels) + 1 not in (num_classes, num_classes - 1):
        raise InputError(f"{path}: {warning}",
                         "pass the labels file made for this model, or leave out -l to print class ids")
    if warning:
        warn(warning)
    return labels


def classify_images(classifier: Classifier, images: Sequence[str], count: int = 1, k: int = 1,
                    threshold: float = 0.0, on_skip: Callable[[str], None] | None = None,
                    confirm: bool = True, workers: int | None = None,
                    confirm_k: float = CONFIRM_K) -> list[ImageResult]:
    """Classify each image `count` times (the classes of the last run). Photos decode on
    worker threads while the interpreter runs (bounded, in input order). A photo decoded on
    the fast path (draft) is also classified on a second resampling of the same draft
    (Preprocessor.load_variants); when the two disagree (decode_noise_call with `confirm_k`)
    it is decoded again exactly and classified again, and that is its answer (unless
    `confirm` is False): each result's `decode` says which. With decoder threads, those
    exact decodes run one at a time on a thread of their own while the next photos are
    classified; results still come back in input order. `workers`: decoder threads
    (edge.pipeline.decode_ahead; 0 decodes and confirms inline). An unreadable image that
    came from a folder (edge.preprocess.list_images) is passed to `on_skip` and skipped
    (without `on_skip` it raises); any other error raises. InputError when no image could
    be read."""
    from .pipeline import decode_ahead, default_workers

    pre = classifier.preprocess
    # confirm=False: no variant, only whether the fast path drafted the photo
    load: Callable[[str], object] = pre.load_variants if confirm else pre.load_decoded
    threads = default_workers() if workers is None else int(workers)
    queue = _InOrder(classifier, count, k, threshold, getattr(images, "from_folder", ()), on_skip,
                     background=threads > 0 and len(images) > 1, depth=2 * max(1, threads) + 2)
    try:
        for path, decoded, error in decode_ahead(images, load, workers=workers):
            if error is not None:
                queue.add(path, error=error)
                continue
            pixels, variant = cast("tuple[np.ndarray, np.ndarray | None]", decoded)
            result, check = _classify_one(classifier, path, pixels, variant, count, k,
                                          threshold, confirm_k)
            queue.add(path, result, check)
        queue.drain()
    finally:
        queue.close()
    if not queue.results:
        raise InputError("no image could be read", "see the warnings above")
    return queue.results


class _InOrder:
    """classify_images's results in input order: a photo to confirm is decoded exactly (inline,
    or on one background thread while the next photos are classified), classified again on
    the exact pixels, and only then, with the results before it, handed out."""

    def __init__(self, classifier: Classifier, count: int, k: int, threshold: float,
                 from_folder: Any, on_skip: Callable[[str], None] | None,
                 background: bool, depth: int) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.classifier, self.count, self.k, self.threshold = classifier, count, k, threshold
        self.from_folder, self.on_skip, self.depth = from_folder, on_skip, depth
        self.results: list[ImageResult] = []
        self.waiting: deque[tuple[str, ImageResult | None, Any, Exception | None]] = deque()
        self.pool = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeport-confirm")
                     if background else None)

    def add(self, path: str, result: ImageResult | None = None, check: bool = False,
            error: Exception | None = None) -> None:
        job = None
        if check and self.pool is not None:
            job = self.pool.submit(self.classifier.preprocess.load_exact, path)
        elif check:
            try:
                self._confirm(cast("ImageResult", result), self.classifier.preprocess.load_exact(path))
            except InputError as e:  # the exact re-decode failed
                result, error = None, e
        self.waiting.append((path, result, job, error))
        self._hand_out(block=len(self.waiting) > self.depth)

    def drain(self) -> None:
        self._hand_out(block=True, everything=True)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _hand_out(self, block: bool, everything: bool = False) -> None:
        while self.waiting:
            path, result, job, error = self.waiting[0]
            if job is not None and not job.done() and not block:
                return
            self.waiting.popleft()
            if job is not None:
                try:
                    self._confirm(cast("ImageResult", result), job.result())
                except InputError as e:  # the exact re-decode failed
                    result, error = None, e
            if error is not None:
                self._failed(path, error)
            else:
                self.results.append(cast("ImageResult", result))
            block = everything or len(self.waiting) > self.depth

    def _confirm(self, result: ImageResult, exact: np.ndarray) -> None:
        clf = self.classifier
        clf.set_input(clf.preprocess(exact))
        result.times_ms = [clf.invoke() * 1000.0 for _ in range(self.count)]
        result.classes = clf.classes(self.k, self.threshold)
        result.decode = "draft, confirmed exact"

    def _failed(self, path: str, error: Exception) -> None:
        if not isinstance(error, InputError) or path not in self.from_folder or self.on_skip is None:
            raise error
        self.on_skip(f"skipped {error}")   # one unreadable image of a folder


def _classify_one(classifier: Classifier, path: str, pixels: np.ndarray,
                  variant: np.ndarray | bool | None, count: int, k: int, threshold: float,
                  confirm_k: float = CONFIRM_K) -> tuple[ImageResult, bool]:
    """One decoded image classified `count` times: (result, whether to confirm it). `variant`:
    the second resampling of a drafted photo (an array: a photo to check), or only whether it
    was drafted (True/False, None: not drafted; no check). A photo whose two resamplings
    disagree is to be decoded exactly and classified again (_InOrder)."""
    second = None
    decode = "draft" if isinstance(variant, np.ndarray) or variant is True else "exact"
    if isinstance(variant, np.ndarray):
        classifier.set_input(classifier.preprocess(variant))
        classifier.invoke()
        second = classifier.output()
    classifier.set_input(classifier.preprocess(pixels))
    times = [classifier.invoke() * 1000.0 for _ in range(count)]
    check = second is not None and decode_noise_call(classifier.output(), second, confirm_k)
    return ImageResult(path, times, classifier.classes(k, threshold), decode), check
