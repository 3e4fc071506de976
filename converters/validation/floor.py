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
                       intra-op thread, against the default (every optimization): a `.ort`
                       saved at another optimization level differs from its source by
                       exactly these rewrites.
  tflite (float):      the interpreter without its default delegate (XNNPACK) and with one
                       thread, against the default (a weak setting: see below).
  torch sources:       the model in float64 (a deep copy, `.double()`) against float32: the
                       source's own float32 rounding. Thread count and oneDNN on/off were
                       tried first and gave identical bits, so they measure nothing.
  keras:               the model cloned in float64 against float32 (eager vs tf.function
                       gave identical bits too).
  savedmodel:          the serving signature compiled by XLA (jit_compile) against TensorFlow's
                       own graph execution (Grappler's optimizers off gave identical bits).
  Core ML sources:     not measured; the report says so and the comparator's rule in ulps of
                       the output's magnitude stays.
A variant that fails to run leaves the floor unmeasured (the report says why) rather than
failing the validation.

MULTIPLE = 4, from measurements on the deep nets of tests/converters/validation/test_floor.py (24 residual conv
blocks whose head sums values of 2e5, as a batch norm with a large running mean does):
faithful conversions erred by 1.0 x floor (.onnx -> .ort), 1.3 x (Keras -> float TFLite),
1.8 x (Keras -> float32 Core ML, reference executor), 0.84 x (SavedModel -> float TFLite)
and 2.0 x (PyTorch -> ONNX); one
layer's weights x 1.01 erred by 35 x (ONNX) and the tests require every broken case to
exceed 16 x. 4 leaves a factor 2 above the worst faithful case and the broken ones far
outside.

The comparator's old rule (64 float32 ulps of the output's largest value, while atol is the
default) is kept only as a minimum, because some second settings measure less than it:
TFLite with and without XNNPACK sum almost alike (floor 2e-6 where a faithful SavedModel
of the same net errs by 1.8e-4), and a floor of exactly 0 says nothing of another
runtime. For a TFLite source the verdict is therefore no more lenient than before the floor.
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


def apply(tolerances, floor, reference):
    """`tolerances` with each output's atol raised to max(atol, MULTIPLE x floor).

    While the atol is the default, the comparator's rule of ROUNDING_ULPS float32 ulps of the
    output's largest value stays as a minimum (a floor can be smaller than that: TFLite's
    XNNPACK and builtin kernels sum almost alike; a floor of 0 says nothing of another
    runtime); it is applied here, per output, and turned off in the comparator.
    `reference`: OrderedDict name -> the source's outputs (S, ...).
    """
    from dataclasses import replace

    from converters.validation.comparator import FLOAT32_EPS, FLOAT_ATOL, ROUNDING_ULPS

    if not floor.measured:
        return tolerances
    default = not isinstance(tolerances.atol, dict) and tolerances.atol == FLOAT_ATOL \
        and tolerances.scale_atol is not False
    atol = OrderedDict()
    for name, ref in reference.items():
        value = floor.tolerance(name, float(tolerances.for_output(name, "atol")))
        if default and np.size(ref) and np.issubdtype(np.asarray(ref).dtype, np.floating) \
                and np.isfinite(ref).any():
            value = max(value, ROUNDING_ULPS * FLOAT32_EPS * float(np.nanmax(np.abs(ref))))
        atol[name] = value
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
    except Exception as e:  # noqa: BLE001 - a variant that cannot run must not cost the verdict
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
    from converters.validation.runners.onnxrt import OnnxRuntimeRunner
    from edge.ort import ort_session

    def session():
        return ort_session(src.path, threads=1, optimize=False)

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
            import sys

            backend = load_backend(src.runtime)
            kinds = getattr(sys.modules.get(backend.Interpreter.__module__), "OpResolverType", None)
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


def _float64_feed(feed):
    return {k: (np.asarray(v, np.float64) if np.asarray(v).dtype == np.float32 else v)
            for k, v in feed.items()}


@contextmanager
def _torch(src):
    import copy
    import warnings

    with warnings.catch_warnings():  # deepcopy reads each parameter's .grad
        warnings.simplefilter("ignore")
        model = copy.deepcopy(src.model).double()
    twin = copy.copy(src)            # the same runner (inputs, forward plan), its model in float64
    twin.model = model
    twin.inference_times = []
    yield _Proxy(twin, _nothing, lambda feed: twin.infer(_float64_feed(feed)))


@contextmanager
def _nothing():
    yield


@contextmanager
def _keras(src):
    import keras

    def to64(layer):
        cfg = layer.get_config()
        cfg["dtype"] = "float64"
        return layer.__class__.from_config(cfg)

    model = keras.models.clone_model(src.model, clone_function=to64)
    model.set_weights([np.asarray(w, np.float64) if np.asarray(w).dtype == np.float32 else w
                       for w in src.model.get_weights()])
    twin = _copy_runner(src, model=model)

    yield _Proxy(twin, _nothing, lambda feed: twin.infer(_float64_feed(feed)))


def _copy_runner(src, **attrs):
    import copy

    twin = copy.copy(src)
    twin.inference_times = []
    for k, v in attrs.items():
        setattr(twin, k, v)
    return twin


@contextmanager
def _savedmodel(src):
    import tensorflow as tf

    signature = src.fn
    xla = tf.function(lambda **kw: signature(**kw), jit_compile=True)
    yield _copy_runner(src, fn=xla)


VARIANTS = {
    "onnx": ("ONNX Runtime with graph optimizations off and 1 thread vs all optimizations", _onnx),
    "tflite": ("TFLite without XNNPACK and 1 thread vs with XNNPACK", _tflite),
    "torch": ("PyTorch in float64 vs float32 (the source's own float32 rounding)", _torch),
    "keras": ("Keras in float64 vs float32 (the source's own float32 rounding)", _keras),
    "savedmodel": ("the SavedModel's signature compiled by XLA vs TensorFlow's graph", _savedmodel),
}
