"""Latency benchmarks: load time, first inference, then statistics of N timed runs.

TFLite models run through `edge.interpreter`; .onnx and .ort models through ONNX Runtime
when it is installed (imported only when such a model is benchmarked).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError, MissingDependency, first_line, require
from .ort import ort_dtype
from .random_inputs import generator, random_normal, random_values

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, MutableMapping, Sequence
    from typing import TypeAlias

    import numpy.typing as npt
    from _typeshed import StrPath

    # (name, shape with None or a symbolic name for open dims, dtype, scale, zero point)
    InputInfo: TypeAlias = tuple[str, tuple[int | str | None, ...], np.dtype, float, int]
    Feeder: TypeAlias = Callable[[list[InputInfo], np.random.Generator],
                                 tuple[dict[str, np.ndarray], dict[str, str], list[str]]]


def latency_stats(seconds: Sequence[float]) -> OrderedDict[str, Any]:
    """Statistics in milliseconds of a list of run times in seconds, plus throughput."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        raise InputError("no timed runs", "use --runs 1 or more")
    return OrderedDict(
        runs=int(ms.size),
        min_ms=float(ms.min()),
        median_ms=float(np.median(ms)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        max_ms=float(ms.max()),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std()),
        throughput_ips=float(1000.0 / ms.mean()) if ms.mean() > 0 else float("inf"),
    )


def random_input(shape: Sequence[int], dtype: npt.DTypeLike, rng: np.random.Generator) -> np.ndarray:
    """Random values for an input nobody gave data for: integers in [-128, 255] (clipped to
    the dtype), bool 0/1, floats standard normal (edge.random_inputs)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return random_values(rng, shape, dtype, max(info.min, -128), min(info.max, 255))
    if dtype == np.bool_:
        return random_values(rng, shape, dtype)
    return random_normal(rng, shape, dtype)


class _TFLiteSession:
    def __init__(self, path: StrPath, device: str | None, runtime: str | None, threads: int | None) -> None:
        from .interpreter import make_interpreter

        self.interpreter, self.info = make_interpreter(path, device=device, runtime=runtime,
                                                       num_threads=threads)

    def inputs(self) -> list[InputInfo]:
        """[(name, shape with None for open dims, dtype, scale, zero point)]"""
        out: list[InputInfo] = []
        for d in self.interpreter.get_input_details():
            sig = d.get("shape_signature")
            shape = sig if sig is not None and len(sig) == len(d["shape"]) else d["shape"]
            scale, zp = d.get("quantization", (0.0, 0))
            out.append((d["name"], tuple(None if int(x) < 0 else int(x) for x in shape),
                        np.dtype(d["dtype"]), scale, zp))
        return out

    def feed(self, rng: np.random.Generator, feeds: Mapping[str, np.ndarray] | None = None) -> None:
        from .files import check_tensor_size

        it = self.interpreter
        if feeds is not None:
            for d in it.get_input_details():
                x = feeds[d["name"]]
                check_tensor_size(self.info["model"], d["name"], x.shape, np.dtype(d["dtype"]).itemsize)
                if tuple(x.shape) != tuple(d["shape"]):
                    it.resize_tensor_input(d["index"], x.shape)
            it.allocate_tensors()
            for d in it.get_input_details():
                it.set_tensor(d["index"], feeds[d["name"]].astype(d["dtype"], copy=False))
            return
        for d in it.get_input_details():
            check_tensor_size(self.info["model"], d["name"], d["shape"], np.dtype(d["dtype"]).itemsize)
            it.set_tensor(d["index"], random_input(d["shape"], d["dtype"], rng))

    def run(self) -> None:
        self.interpreter.invoke()


class _OnnxSession:
    def __init__(self, path: StrPath, device: str | None, runtime: str | None, threads: int | None) -> None:
        from .ort import ort_session  # onnxruntime itself is imported there, lazily

        ort = require("onnxruntime", "convert", "benchmarking .onnx/.ort models")
        if device not in (None, "auto", "cpu"):
            raise InputError(f"ONNX Runtime models run on the CPU here; --device {device} is for TFLite")
        try:
            self.session = ort_session(path, threads=threads, what="benchmarking .onnx/.ort models")
        except Exception as e:
            raise InputError(f"onnxruntime cannot load {path}: {first_line(e)}") from None
        self.info = {"runtime": f"onnxruntime {ort.__version__}", "device": "cpu", "model": str(path)}
        self.feeds: Mapping[str, np.ndarray] | None = None

    def inputs(self) -> list[InputInfo]:
        # open dims: None, or their symbolic name (str) when the model gives one
        return [(i.name, tuple(d if (isinstance(d, int) and d > 0) or isinstance(d, str) else None
                               for d in i.shape),
                 ort_dtype(i.type), 0.0, 0)
                for i in self.session.get_inputs()]

    def feed(self, rng: np.random.Generator, feeds: Mapping[str, np.ndarray] | None = None) -> None:
        if feeds is not None:
            self.feeds = feeds
            return
        from .files import check_tensor_size

        feeds = {}
        for i in self.session.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
            dtype = ort_dtype(i.type)
            check_tensor_size(self.info["model"], i.name, shape, dtype.itemsize)
            feeds[i.name] = random_input(shape, dtype, rng)
        self.feeds = feeds

    def run(self) -> None:
        self.session.run(None, self.feeds)


def open_session(path: StrPath, device: str | None = "auto", runtime: str | None = None,
                 threads: int | str | None = None) -> _TFLiteSession | _OnnxSession:
    """A benchmarkable session for a .tflite, .onnx or .ort model."""
    from .files import open_input
    from .interpreter import check_threads

    threads = check_threads(threads)
    reason = cannot_run_here(path)
    if reason:
        raise InputError(reason)
    with open_input(path, "model", "model") as f:  # a regular file of bounded size only
        head = f.read(8)
    if head[4:8] == b"TFL3":
        return _TFLiteSession(path, device, runtime, threads)
    if head[4:8] == b"ORTM" or str(path).endswith((".onnx", ".ort")):
        return _OnnxSession(path, device, runtime, threads)
    raise InputError(f"{path} is neither a TFLite nor an ONNX/ORT model", "bench takes .tflite, .onnx, .ort")


COREML_SUFFIXES = (".mlpackage", ".mlmodel")


def cannot_run_here(path: StrPath) -> str | None:
    """Why `path` is a model bench cannot run on this machine (a Core ML package), or None."""
    text = os.fspath(path).rstrip("/" + os.sep)
    if text.lower().endswith(COREML_SUFFIXES):
        return (f"{os.path.basename(text)} is a Core ML model: Core ML runs only on Apple devices "
                "(macOS, iOS); bench here runs .tflite, .onnx and .ort")
    return None


def benchmark(path: StrPath, runs: int = 100, warmup: int = 5, threads: int | str | None = None,
              device: str | None = "auto", runtime: str | None = None, seed: int = 0,
              feeder: Feeder | None = None) -> OrderedDict[str, Any]:
    """Benchmark one model; returns an ordered dict of figures (times in ms).

    `feeder(inputs, rng)` -> ({name: array}, {name: shape description}, [notes]) chooses the
    inputs, with `inputs` a list of (name, shape with None or a symbolic name (str) for open
    dims, dtype, scale, zp);
    without it every input gets random values of its fixed shape (open dims 1).
    """
    if runs < 1 or warmup < 0:
        raise InputError("--runs must be >= 1 and --warmup >= 0")
    t0 = time.perf_counter()
    session = open_session(path, device, runtime, threads)
    load_ms = (time.perf_counter() - t0) * 1000.0
    rng = generator(seed)
    shapes: dict[str, str] | None = None
    notes: list[str] = []
    try:
        if feeder is not None:
            from .files import check_tensor_size

            for name, shape, dtype, *_ in session.inputs():  # before anything is allocated
                check_tensor_size(path, name, [d if isinstance(d, int) else 1 for d in shape], dtype.itemsize)
            feeds, shapes, notes = feeder(session.inputs(), rng)
            session.feed(rng, feeds)
        else:
            session.feed(rng)
        t0 = time.perf_counter()
        session.run()
        first_ms = (time.perf_counter() - t0) * 1000.0
    except (InputError, MissingDependency):
        raise
    except Exception as e:  # the runtime refused these inputs
        ran = ", ".join(f"{n}:{d}" for n, d in (shapes or {}).items())
        placeholder = any("placeholder" in str(d) for d in (shapes or {}).values())
        raise InputError(f"{os.path.basename(str(path))} does not run on inputs {ran or 'of its default shapes'}: "
                         f"{first_line(e)}",
                         "those shapes are placeholders for open dimensions: give the real ones "
                         "with --input-shapes NAME:[..]" if placeholder else
                         "check --input-shapes / --val-range / --data") from None
    for _ in range(warmup):
        session.run()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run()
        times.append(time.perf_counter() - t0)
    result = OrderedDict(model=str(path), runtime=session.info["runtime"], device=session.info["device"],
                         threads=threads, size_bytes=os.path.getsize(path), load_ms=load_ms,
                         first_inference_ms=first_ms, warmup=warmup)
    if shapes is not None:
        result["inputs"] = shapes
        result["input_notes"] = notes
    result.update(latency_stats(times))
    return result


COLUMNS = [("model", "model"), ("inputs", "inputs"), ("runtime", "runtime"), ("device", "device"),
           ("threads", "thr"),
           ("load_ms", "load ms"), ("first_inference_ms", "first ms"), ("min_ms", "min"),
           ("median_ms", "median"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("max_ms", "max"),
           ("mean_ms", "mean"), ("std_ms", "std"), ("throughput_ips", "img/s")]


def mark_input_differences(results: Sequence[MutableMapping[str, Any]]) -> bool:
    """Say in each row when the rows ran different input shapes (their latencies then compare
    different work): each ran row gets `inputs_differ` True. Returns whether they differ."""
    ran = [r for r in results if r.get("inputs") is not None]

    # the same work in NCHW and NHWC counts as the same shape
    def key(r: Mapping[str, Any]) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(sorted(str(d).split(" ")[0].split("x"))) for d in r["inputs"].values())

    differ = len({key(r) for r in ran}) > 1
    for r in ran:
        r["inputs_differ"] = differ
    return differ


def format_table(results: Sequence[MutableMapping[str, Any]]) -> str:
    """A side-by-side text table of benchmark results; a model that did not run gets a row
    saying why, and rows that ran different input shapes say so."""
    from .files import printable

    differ = mark_input_differences(results)
    ran = [r for r in results if r.get("status", "ran") == "ran"]
    rows = [[h for _, h in COLUMNS]]
    for r in ran:
        row = []
        for key, _ in COLUMNS:
            v = r.get(key)
            if key == "model":
                v = os.path.basename(str(v))
            elif key == "inputs" and isinstance(v, dict):
                v = " ".join(f"{n}:{d}" for n, d in v.items()) if len(v) > 1 else next(iter(v.values()), "-")
                v += " [differs from other rows]" if differ else ""
            # cells are escaped: a newline in a model or input name stays inside its row
            row.append("-" if v is None else f"{v:.2f}" if isinstance(v, float) else printable(v))
        rows.append(row)
    names = [os.path.basename(str(r.get("model"))) for r in results if r not in ran]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    widths[0] = max([widths[0]] + [len(n) for n in names])
    lines = ["  ".join(c.rjust(w) if i > 4 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        if r not in ran:
            lines.append(f"{printable(os.path.basename(str(r.get('model')))).ljust(widths[0])}  "
                         f"{r.get('status', 'not run')}: {printable(r.get('reason', ''))}")
    if differ:
        lines.append("note: the rows ran different input shapes; give --input-shapes to compare the same work")
    return "\n".join(lines)


def plot(results: Sequence[Mapping[str, Any]], path: StrPath) -> None:
    """Write a PNG box plot of median/p90/p99 per model; needs matplotlib.

    `path` must be a regular file or not exist: a device node, FIFO or link is refused."""
    from .files import check_output, is_no_space, no_space
    from .run import guard_write

    guard_write(path, "plot")
    if os.path.isdir(path):
        raise InputError(f"cannot write the plot {path}: it is a folder", "choose a writable path")
    check_output(path, "plot")  # "the plot X exists and is a FIFO: ..." (exit 2)
    results = [r for r in results if r.get("status", "ran") == "ran"]
    require("matplotlib", "dev", "--plot").use("Agg")
    plt = require("matplotlib.pyplot", "dev", "--plot")
    labels = [f"{os.path.basename(r['model'])}\n{r['runtime'].split()[0]} t={r['threads'] or '-'}" for r in results]
    x = np.arange(len(results))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(results)), 4.5))
    for i, (key, name) in enumerate((("median_ms", "median"), ("p90_ms", "p90"), ("p99_ms", "p99"))):
        ax.bar(x + (i - 1) * 0.27, [r[key] for r in results], 0.27, label=name)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("latency (ms)")
    ax.set_title("edgeport bench")
    ax.legend()
    fig.tight_layout()
    # Atomic: a temp file beside the target, renamed into place (no half-written PNG).
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=120)
        check_output(path, "plot")  # again: it may have been swapped for a link meanwhile
        os.replace(tmp, path)
    except OSError as e:
        if is_no_space(e):
            raise no_space(path) from None
        raise InputError(f"cannot write the plot {path}: {e.strerror}", "choose a writable path") from None
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
