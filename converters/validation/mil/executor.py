"""Run a Core ML ML program in numpy: the reference executor.

    ex = MLProgramExecutor.load("model.mlpackage")   # raises UnsupportedProgram when an op
    ex.missing                                       # has no kernel (then: structure only)
    outputs = ex.run({"image": pixels_nchw_0_255})    # OrderedDict output name -> array

The program is read with coremltools' milproto loader (the same PyMIL objects coremltools
builds when it converts), then flattened once into a list of steps: each step is a kernel of
converters/validation/mil/kernels.py, the names of its inputs and outputs, and its constant
arguments. Ops whose inputs are all constants were already folded by MIL's own
`value_inference` while loading, and their values are used as constants.

What the model description says is honoured:
  * ImageType inputs: the feed is 0..255 pixels (NCHW, RGB); they are rounded to 8 bits as a
    pixel buffer is, reordered to BGR or reduced to grayscale when the description says so,
    and must have the description's width and height. The scale and bias Core ML applies are
    ops of the program itself (mul, add), so they run as any other op.
  * multi-array inputs: cast to the program's input type.
  * a classifier: the `classify` op yields the predicted label and the probabilities, which
    are returned as one array in label order under the probabilities output's name.
Float16: where the program's types say float16 (weights, and every op after a cast to fp16),
each op's result is rounded to float16, products are accumulated in float32. This is what
the program specifies, not a bit-exact copy of any Core ML compute unit; tolerances follow.

This is the Core ML reference executor, not the Core ML runtime.
"""

import os
from collections import OrderedDict

import numpy as np

from converters.validation.mil.kernels import KERNELS, VALUE_PRESERVING
from edge.errors import InputError

# colorSpace values of Core ML's ImageFeatureType
GRAYSCALE, RGB, BGR, GRAYSCALE_FLOAT16 = 10, 20, 30, 40
COLOR_NAMES = {GRAYSCALE: "GRAYSCALE", RGB: "RGB", BGR: "BGR", GRAYSCALE_FLOAT16: "GRAYSCALE_FLOAT16"}
# ITU-R BT.601 luma, what an RGB -> grayscale pixel conversion uses
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class UnsupportedProgram(Exception):
    """The program has an op (or an op form) the executor has no kernel for."""

    def __init__(self, ops, detail=""):
        self.ops = sorted(set(ops))
        super().__init__(f"no reference kernel for op {', '.join(self.ops)}"
                         + (f" ({detail})" if detail else ""))


class OpInfo:
    __slots__ = ("type", "name", "output_shapes")

    def __init__(self, op_type, name, output_shapes):
        self.type, self.name, self.output_shapes = op_type, name, output_shapes


def _nptype(var):
    """numpy dtype of a MIL var (float16 kept as float16 to mark rounding), or None."""
    from coremltools.converters.mil.mil import types

    try:
        t = var.dtype
        if t is None or not (types.is_tensor(var.sym_type) or types.is_scalar(var.sym_type)):
            return None
        return np.dtype(types.nptype_from_builtin(t))
    except Exception:
        return None


def _static_shape(var):
    try:
        shape = var.shape
    except Exception:
        return None
    if shape is None:
        return None
    return tuple(int(d) if isinstance(d, (int, np.integer)) else None for d in shape)


FP16_MAX = float(np.finfo(np.float16).max)   # 65504


def _as_type(value, dtype):
    """Round a kernel's result to the op's declared type (float16 stays float32 in memory,
    rounded through float16)."""
    if dtype is None or isinstance(value, (str, bytes)):
        return value
    if dtype == np.float16:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is recorded, not warned
            return np.asarray(value, np.float16).astype(np.float32)
    if dtype.kind == "f":
        return np.asarray(value, np.float32)
    return np.asarray(value).astype(dtype)


def _const_value(var, dtype):
    val = var.val
    if isinstance(val, (list, tuple)):
        return list(val)
    if isinstance(val, np.ndarray) and val.dtype.kind in "US":
        return val
    if isinstance(val, (str, bytes)):
        return val
    if dtype is not None and dtype.kind in "f" and val is not None:
        return np.asarray(val, np.float32)
    if isinstance(val, np.generic):
        return val.item()
    return val


class Step:
    __slots__ = ("fn", "info", "args", "outputs", "dtypes")

    def __init__(self, fn, info, args, outputs, dtypes):
        self.fn, self.info, self.args, self.outputs, self.dtypes = fn, info, args, outputs, dtypes


class MLProgramExecutor:
    def __init__(self, spec, program, function_name="main"):
        self.spec = spec
        self.program = program
        self.function = program.functions[function_name]
        self.constants = {}
        self.steps = []
        self.missing = []
        self.input_types = OrderedDict()   # program input name -> numpy dtype
        self.input_shapes = OrderedDict()
        self.output_names = [v.name for v in self.function.outputs]
        self.op_counts = {}
        self.computes_in_fp16 = False
        self.fp16_overflow = None          # after run(): the first float16 op that overflowed
        self._compile()
        self.description = {f.name: f for f in spec.description.input}
        self.classifier_probs = spec.description.predictedProbabilitiesName or None
        self.classifier_label = spec.description.predictedFeatureName or None

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, path, spec=None):
        """Read `path` (.mlpackage or .mlmodel with an ML program)."""
        import coremltools as ct
        from coremltools.converters.mil.frontend.milproto.load import load as mil_load

        if spec is None:
            spec = ct.utils.load_spec(os.fspath(path))
        if spec.WhichOneof("Type") != "mlProgram":
            raise UnsupportedProgram([spec.WhichOneof("Type") or "unknown"],
                                     "the executor runs ML programs only")
        weights = os.path.join(os.fspath(path), "Data", "com.apple.CoreML", "weights")
        if not os.path.isdir(weights):
            weights = os.path.join(os.path.dirname(os.fspath(path)), "weights")
        program = mil_load(spec, spec.specificationVersion, weights)
        return cls(spec, program)

    def _compile(self):
        fn = self.function
        for name, var in fn.inputs.items():
            self.input_types[name] = _nptype(var)
            self.input_shapes[name] = _static_shape(var)
        for op in fn.operations:
            self.op_counts[op.op_type] = self.op_counts.get(op.op_type, 0) + 1
            outs = list(op.outputs)
            dtypes = [_nptype(v) for v in outs]
            if any(d == np.float16 for d in dtypes):
                self.computes_in_fp16 = True
            if op.op_type == "const" or (op.op_type != "classify" and outs and
                                         all(v.val is not None for v in outs)):
                # a const, or an op MIL's value_inference already folded when loading
                for v, d in zip(outs, dtypes):
                    self.constants[v.name] = _as_type(_const_value(v, d), d) \
                        if not isinstance(v.val, (list, str)) else _const_value(v, d)
                continue
            if getattr(op, "blocks", None):
                self.missing.append(op.op_type)
                continue
            kernel = KERNELS.get(op.op_type)
            if kernel is None:
                self.missing.append(op.op_type)
                continue
            args = []
            for pname, var in op.inputs.items():
                if isinstance(var, (list, tuple)):
                    args.append((pname, True, [v.name for v in var]))
                else:
                    args.append((pname, False, var.name))
            info = OpInfo(op.op_type, op.name, [_static_shape(v) for v in outs])
            if op.op_type in VALUE_PRESERVING:
                # float16 in, float16 out: the values need no rounding, only the float32 store
                dtypes = [np.dtype(np.float32) if d == np.float16 else d for d in dtypes]
            self.steps.append(Step(kernel, info, args, [v.name for v in outs], dtypes))
        if self.missing:
            raise UnsupportedProgram(self.missing)

    # -- inputs ---------------------------------------------------------------------------
    def _image(self, name, x, image_type):
        color = int(image_type.colorSpace)
        x = np.asarray(x, np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise InputError(f"image input '{name}' takes (1, C, H, W) pixels, got shape {x.shape}")
        h, w = int(image_type.height), int(image_type.width)
        if (x.shape[2], x.shape[3]) != (h, w):
            raise InputError(f"image input '{name}' is {w}x{h} pixels, the feed is "
                             f"{x.shape[3]}x{x.shape[2]}")
        if color != GRAYSCALE_FLOAT16:
            x = np.clip(np.rint(x), 0, 255)   # an 8-bit pixel buffer
        if color in (GRAYSCALE, GRAYSCALE_FLOAT16):
            if x.shape[1] == 3:
                x = np.tensordot(LUMA, x, axes=([0], [1]))[:, None]
                if color == GRAYSCALE:
                    x = np.clip(np.rint(x), 0, 255)
        elif x.shape[1] != 3:
            raise InputError(f"image input '{name}' is {COLOR_NAMES.get(color, color)}: the feed "
                             f"has {x.shape[1]} channels")
        elif color == BGR:
            x = x[:, ::-1]
        return np.ascontiguousarray(x, np.float32)

    def prepare(self, feed):
        """{input name: array} -> the program's input values."""
        env = {}
        for name, dtype in self.input_types.items():
            if name not in feed:
                raise InputError(f"missing input '{name}'")
            x = feed[name]
            desc = self.description.get(name)
            if desc is not None and desc.type.WhichOneof("Type") == "imageType":
                x = self._image(name, x, desc.type.imageType)
            x = np.asarray(x)
            shape = self.input_shapes.get(name)
            if shape and None not in shape and x.shape != shape:
                if x.size != int(np.prod(shape)):
                    raise InputError(f"input '{name}' takes shape {list(shape)}, got {list(x.shape)}")
                x = x.reshape(shape)
            env[name] = _as_type(x, dtype)
        return env

    # -- running --------------------------------------------------------------------------
    def run(self, feed, keep=False):
        """OrderedDict {output name: array}. With keep=True, every intermediate value too
        (as .intermediates, for debugging a mismatch)."""
        with _one_blas_thread():
            return self._run(feed, keep)

    def _check_overflow(self, step, name, value, rounded):
        """Record the first float16 op whose finite float32 result became infinite or NaN in
        float16 (|x| > 65504): a float16 program then computes garbage where float32 would not."""
        if not isinstance(rounded, np.ndarray) or rounded.dtype.kind != "f" or np.isfinite(rounded).all():
            return
        exact = np.asarray(value, np.float32) if not isinstance(value, (str, bytes)) else None
        finite = exact[np.isfinite(exact)] if exact is not None else np.zeros(0)
        peak = float(np.abs(finite).max()) if finite.size else float("inf")
        if exact is not None and not np.isfinite(exact).all() and peak <= FP16_MAX:
            return  # the op made inf/NaN in float32 too: not float16's doing
        self.fp16_overflow = {"op": step.info.type, "output": name, "max_abs": peak}

    def _run(self, feed, keep):
        self.fp16_overflow = None
        env = dict(self.constants)
        env.update(self.prepare(feed))
        get = env.__getitem__
        for step in self.steps:
            a = {}
            for pname, is_list, ref in step.args:
                a[pname] = [get(r) for r in ref] if is_list else get(ref)
            try:
                res = step.fn(a, step.info)
            except NotImplementedError as e:
                raise UnsupportedProgram([step.info.type], str(e)) from None
            if len(step.outputs) == 1:
                res = (res,)
            for name, value, dtype in zip(step.outputs, res, step.dtypes):
                env[name] = _as_type(value, dtype)
                if dtype == np.float16 and self.fp16_overflow is None:
                    self._check_overflow(step, name, value, env[name])
        out = OrderedDict()
        for name in self.output_names:
            v = env[name]
            if name == self.classifier_label:
                continue
            out[name] = v if isinstance(v, np.ndarray) else np.asarray(v)
        self.intermediates = env if keep else None
        return out

    def labels(self):
        from converters.validation.mil.labels import class_labels_of

        return class_labels_of(self.spec)


class _one_blas_thread:
    """BLAS limited to one thread while the executor runs: its matrices are small, and on a
    shared 2-core machine OpenBLAS' threads spin-wait for each other (a 112x672 by 672x196
    product took 75 ms with 2 threads against 1.4 ms with one, under load)."""

    _controller = None

    def __enter__(self):
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            self._limit = None
            return self
        if _one_blas_thread._controller is None:
            _one_blas_thread._controller = ThreadpoolController()
        self._limit = _one_blas_thread._controller.limit(limits=1, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self._limit is not None:
            self._limit.restore_original_limits()
