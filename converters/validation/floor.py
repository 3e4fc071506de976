"""The noise floor: how much the source's own runtime varies on the same inputs.

A faithful float conversion does not reproduce its source bit for bit: the runtime that runs
it fuses other ops, sums in another order, picks other kernels. How far that moves an output
depends on the model (its depth, its magnitudes, how it amplifies rounding), so no fixed atol
and no rule in ulps of the output fits every model. The floor measures it instead: the
source is run a second time, on the same inputs, under another setting of its own runtime,
and the largest difference per output is that output's floor. A float artefact is then
judged with, per output,

    atol = max(user atol, MULTIPLE x floor)

and the report gives the floor, the multiple and the measured error.

The second setting, per source runtime (`VARIANTS`):
  onnx / ort:          ONNX Runtime with graph optimizations off (ORT_DISABLE_ALL) and one
                       intra-op thread, against the default (every optimization, default
                       threads): the difference a `.ort` saved at another optimization level
                       shows is exactly this one.
  tflite (float):      the interpreter without its default delegate (XNNPACK) and one thread,
                       against the default (XNNPACK).
  torch / torchscript: oneDNN (mkldnn) kernels off and one thread, against the default.
  keras:               the model traced into one graph (tf.function: Grappler's fusions)
                       against the eager call.
  savedmodel:          the SavedModel reloaded with Grappler's optimizers off, against the
                       optimized signature.
  other sources (Core ML): not measured; the report says so and the rule in ulps of the
                       output's magnitude of the comparator is kept for them.

MULTIPLE = 4, from measurements (tests/test_floor.py builds the models): over faithful
conversions of deep conv nets (ONNX -> .ort at each saved optimization level, ONNX ->
float TFLite, Keras -> float TFLite, PyTorch -> ONNX, float32 Core ML in the reference
executor) the artefact's max error was at most ~2x the floor, while the smallest breakage
tried (one layer's weights x 1.01) moved outputs by 10^2 to 10^4 floors. 4 leaves a margin
of 2 above the worst faithful case and keeps every broken case failing by far.

A floor of 0 (the runtime is deterministic under both settings) leaves the user's atol.
"""

from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

MULTIPLE = 4.0


@dataclass
class Floor:
    """The source's own variation per output, and how it was measured."""

    method: str = ""                 # the two settings compared, or why nothing was measured
    values: dict = field(default_factory=OrderedDict)   # output name -> max abs difference
    multiple: float = MULTIPLE

    @property
    def measured(self):
        return bool(self.values)

    def tolerance(self, name, atol):
        """max(atol, multiple x floor) for output `name` (atol when nothing was measured)."""
        f = self.values.get(name)
        if f is None or not np.isfinite(f):
            return atol
        return max(float(atol), self.multiple * float(f))

    def to_dict(self, outputs=()):
        """{method, multiple, outputs: {name: {floor, tolerance, error, within}}}.
        `outputs`: the comparator's OutputResults (tolerance and error as judged)."""
        per = OrderedDict()
        by_name = {o.name: o for o in outputs}
        for name, f in self.values.items():
            o = by_name.get(name)
            per[name] = {"floor": float(f),
                         "tolerance": None if o is None else float(o.atol),
                         "error": None if o is None else float(o.max_abs),
                         "error_in_floors": None if o is None or not f else float(o.max_abs) / float(f)}
        return {"measured": self.measured, "method": self.method, "multiple": self.multiple,
                "outputs": per}

    def note(self, name):
        """A line for the report: 'floor 3.1e-06 (ORT optimizations ...); atol = 4 x floor'."""
        f = self.values.get(name)
        if f is None:
            return ""
        return f"noise floor {f:.3g} ({self.method}); tolerance max(atol, {self.multiple:g} x floor)"


def apply(tolerances, floor, names):
    """`tolerances` with each output's atol raised to max(atol, MULTIPLE x floor), and the
    ulp rule off where a floor was measured (the floor takes its role)."""
    from dataclasses import replace

    if not floor.measured:
        return tolerances
    atol = OrderedDict((n, floor.tolerance(n, float(tolerances.for_output(n, "atol"))))
                       for n in names)
    return replace(tolerances, atol=dict(atol), scale_atol=False)


def measure(source_runner, run):
    """The floor of `source_runner` (activated, already run once).

    Args:
      source_runner: the source's Runner (activated).
      run: callable(runner) -> OrderedDict name -> (S, ...) outputs on the validation samples;
        called with a runner built for the second setting.
    Returns:
      (Floor, the second run's outputs or None). Never raises for a runtime that cannot be
      varied: the Floor then says why and holds no values.
    """
    variant = VARIANTS.get(_kind(source_runner))
    if variant is None:
        return Floor(method=f"not measured: no second setting for {source_runner.format} sources"), None
    method, make = variant
    try:
        with make(source_runner) as other:
            out = run(other)
    except Exception as e:  # a variant that cannot run must not cost the verdict
        from edge.errors import first_line

        return Floor(method=f"not measured: {method} failed: {first_line(e)}"), None
    return Floor(method=method, values=OrderedDict()), out


def differences(reference, other):
    """OrderedDict name -> max |reference - other| over every sample (NaN when not comparable)."""
    values = OrderedDict()
    for name, a in reference.items():
        b = other.get(name) if other is not None else None
        if b is None or np.shape(a) != np.shape(b) or not np.issubdtype(np.asarray(a).dtype, np.floating):
            continue
        d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
        values[name] = float(np.nanmax(d)) if d.size else 0.0
    return values


def floor_of(source_runner, run, reference):
    """measure() and the differences against `reference` (the source's first run)."""
    floor, out = measure(source_runner, run)
    if out is not None:
        floor.values = differences(reference, out)
        if not floor.values:
            floor.method = f"not measured: {floor.method} gave no comparable float outputs"
    return floor


# -- the second setting of each runtime ------------------------------------------------------
def _kind(runner):
    fmt = getattr(runner, "format", None)
    if fmt in ("onnx", "ort"):
        return "onnx"
    if fmt == "tflite" and getattr(runner, "precision", "float") == "float":
        return "tflite"
    from converters import formats

    if fmt in formats.TORCH_FORMATS:
        return "torch"
    if fmt in (formats.KERAS, formats.SAVEDMODEL):
        return fmt
    return None


@contextmanager
def _onnx(src):
    from converters.validation.runners.onnxrt import OnnxRuntimeRunner, import_ort

    def session():
        ort = import_ort()
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.intra_op_num_threads = 1
        return ort.InferenceSession(src.path, sess_options=opts, providers=["CPUExecutionProvider"])

    r = OnnxRuntimeRunner(src.path, src.metadata, fmt=src.format, session=session)
    r.activate()
    try:
        yield r
    finally:
        r.deactivate()


@contextmanager
def _tflite(src):
    from converters.validation.runners.tflite import TFLiteRunner, _signature_names
    from edge.interpreter import load_backend

    class Plain(TFLiteRunner):
        def _activate(self):
            backend = load_backend(src.runtime)
            kinds = getattr(backend, "OpResolverType", None)
            if kinds is None:
                raise RuntimeError("this TFLite backend cannot turn its default delegate off")
            self.interpreter = backend.Interpreter(
                model_path=self.path, num_threads=1,
                experimental_op_resolver_type=kinds.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            try:
                self.interpreter.allocate_tensors()
                self._allocated = True
            except (ValueError, RuntimeError):
                self._allocated = False
            self._inputs = self.interpreter.get_input_details()
            self._outputs = self.interpreter.get_output_details()
            self._names = _signature_names(self.interpreter)

    r = Plain(src.path, src.metadata, device="cpu", runtime=src.runtime, fmt=src.format)
    r.activate()
    try:
        yield r
    finally:
        r.deactivate()


class _Proxy:
    """The source runner itself, its inference run inside `context`."""

    def __init__(self, runner, context, infer=None):
        self._runner, self._context, self._own_infer = runner, context, infer

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def infer(self, feed):
        with self._context():
            if self._own_infer is not None:
                return OrderedDict((k, np.asarray(v)) for k, v in self._own_infer(feed).items())
            return self._runner.infer(feed)


@contextmanager
def _torch(src):
    import torch

    @contextmanager
    def plain():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.backends.mkldnn.flags(enabled=False):
                yield
        finally:
            torch.set_num_threads(threads)

    yield _Proxy(src, plain)


@contextmanager
def _keras(src):
    import tensorflow as tf

    model = src.model
    fn = tf.function(lambda x: model(x, training=False), autograph=False)

    def infer(feed):
        xs = [feed[m.name] for m in src.input_metadata()]
        y = fn(xs if len(xs) > 1 else xs[0])
        names = src._output_names()
        ys = list(y.values()) if isinstance(y, dict) else (
            list(y) if isinstance(y, (list, tuple)) else [y])
        return OrderedDict((n, np.asarray(v)) for n, v in zip(names, ys))

    @contextmanager
    def nothing():
        yield

    yield _Proxy(src, nothing, infer)


@contextmanager
def _savedmodel(src):
    import tensorflow as tf

    from converters.validation.runners.tf import SavedModelRunner

    before = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    r = SavedModelRunner(src.path, src.metadata, signature=src.signature)
    try:
        r.activate()
        yield r
    finally:
        r.deactivate()
        tf.config.optimizer.set_experimental_options(dict(before, disable_meta_optimizer=False))


VARIANTS = {
    "onnx": ("ONNX Runtime with graph optimizations off and 1 thread vs all optimizations", _onnx),
    "tflite": ("TFLite without XNNPACK and 1 thread vs with XNNPACK", _tflite),
    "torch": ("PyTorch with oneDNN off and 1 thread vs the default kernels", _torch),
    "keras": ("Keras traced into a graph (tf.function) vs eager", _keras),
    "savedmodel": ("the SavedModel with Grappler's optimizers off vs on", _savedmodel),
}
