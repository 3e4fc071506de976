"""Core ML runner: numbers through Core ML on macOS, through the reference executor elsewhere.

On macOS the model runs in Core ML itself (coremltools' MLModel, CPU only). Elsewhere Core ML
cannot run, and an ML program runs in edgeport's numpy reference executor
(converters/validation/mil/): the Core ML reference executor, not the Core ML runtime, and
the runner says so. A program with an op the executor has no kernel for (or a neural network
model, which the executor does not run) falls back to the structure-only check: inputs,
outputs, shapes, dtypes, metadata and classifier labels, with the reason.

A classifier's outputs are returned as one array: the probabilities in label order, under the
name of the probabilities output (the predicted label is the array's argmax).
"""

import platform
from collections import OrderedDict

import numpy as np

from converters.validation.mil.labels import class_labels_of  # noqa: F401  (re-exported)
from converters.validation.runners.base import Runner, tensor_meta
from edge.errors import EdgeportError, InputError, first_line, require

_ARRAY_TYPES = {65568: np.float32, 65600: np.float64, 65552: np.float16, 131104: np.int32,
                131080: np.int8}


def import_coremltools():
    return require("coremltools", "convert", "reading Core ML models")


EXECUTOR_NOTE = "Core ML reference executor, not the Core ML runtime"
# float16 programs against a float32 source: each op rounds to float16 (relative step 2**-11),
# which over a network leaves cosine similarity above 0.9999 and the output norm within 1%;
# a wrong weight, scale, bias or channel order leaves far more.
FP16_TOLERANCES = {"min_cosine": 0.999, "max_scale_error": 0.02}


def fp16_overflow_message(found):
    """One line naming where a float16 program overflowed and what to do about it."""
    peak = found.get("max_abs")
    reached = f"values up to {peak:.3g}" if peak not in (None, float("inf")) else "infinite values"
    return (f"float16 overflow: op {found.get('op')} ('{found.get('output')}') computes {reached}, above "
            "float16's 65504, so the float16 Core ML model gives infinity/NaN there "
            "(convert with --coreml-precision float32)")


class CoreMLRunner(Runner):
    format = "coreml"

    def __init__(self, path, metadata=None, backend="auto"):
        """backend: "auto" (Core ML on macOS, the reference executor elsewhere), "runtime"
        or "executor"."""
        super().__init__(path, metadata)
        if backend not in ("auto", "runtime", "executor"):
            raise InputError(f"unknown Core ML backend {backend}")
        self.backend = backend
        self.use_runtime = backend == "runtime" or (backend == "auto" and
                                                    platform.system() == "Darwin")
        self.numbers = True
        self.structure_reason = None
        self.tolerance_defaults = {}
        self.spec = None
        self.mlmodel = None
        self.executor = None

    def _activate(self):
        from converters.artefact import PackageCopy

        ct = import_coremltools()
        self.fp16_overflow = None   # set by a float16 run that overflowed (see _infer)
        # Read from a checked private copy: coremltools rewrites a package's Manifest.json and
        # follows the paths it names; the user's package is never opened for writing.
        copy = PackageCopy(self.path)
        try:
            if self.use_runtime:
                self.mlmodel = ct.models.MLModel(copy.path, compute_units=ct.ComputeUnit.CPU_ONLY)
                self.spec = self.mlmodel.get_spec()
            else:
                self.spec = ct.utils.load_spec(copy.path)
        except Exception as e:
            copy.close()
            raise InputError(f"coremltools cannot read {self.path}: {first_line(e)}") from None
        self._copy = copy  # weights may be read lazily: the private copy lives until deactivate
        try:
            self._load_executor(copy.path)
        except BaseException:
            self._deactivate()
            raise
        if self.executor is not None and self.executor.computes_in_fp16:
            self.precision = "reduced"
            self.tolerance_defaults = dict(FP16_TOLERANCES)
        if self.use_runtime:
            self.info["runtime"] = f"Core ML (coremltools {ct.__version__})"
        elif self.numbers:
            self.info["runtime"] = f"Core ML ref. executor (numpy; coremltools {ct.__version__})"
            self.info["note"] = EXECUTOR_NOTE
        else:
            self.info["runtime"] = f"coremltools {ct.__version__} (structure only on this OS)"
            self.info["note"] = self.structure_reason

    def _load_executor(self, path):
        """The reference executor; off macOS a program it cannot run means structure only."""
        from converters.validation.mil.executor import MLProgramExecutor, UnsupportedProgram

        reason = None
        try:
            self.executor = MLProgramExecutor.load(path, self.spec)
            if not self.use_runtime:
                self.executor.run(self._zeros_feed())   # op forms a kernel does not cover
        except UnsupportedProgram as e:
            reason = f"structure only: {e}"
        except EdgeportError:
            raise
        except Exception as e:
            reason = f"structure only: the reference executor cannot run it: {first_line(e)}"
        if reason:
            self.executor = None
            if not self.use_runtime:
                self.numbers = False
                self.structure_reason = reason

    def _zeros_feed(self):
        """Zeros for every input under the program's own names (the executor is fed directly
        here, not through infer(), so a name map on input_metadata must not apply)."""
        feed = {}
        for m in (self._feature(f) for f in self.spec.description.input):
            feed[m.name] = np.zeros(tuple(1 if d is None else d for d in m.shape), m.dtype)
        return feed

    def _deactivate(self):
        self.mlmodel = None
        self.executor = None
        copy = getattr(self, "_copy", None)
        if copy is not None:
            copy.close()
            self._copy = None

    @staticmethod
    def _feature(f):
        t = f.type
        kind = t.WhichOneof("Type")
        if kind == "multiArrayType":
            shape = tuple(int(d) for d in t.multiArrayType.shape)
            if not shape and t.multiArrayType.shapeRange.sizeRanges:
                shape = tuple(int(r.lowerBound) for r in t.multiArrayType.shapeRange.sizeRanges)
            return tensor_meta(f.name, shape, _ARRAY_TYPES.get(t.multiArrayType.dataType, np.float32))
        if kind == "imageType":
            c = 1 if t.imageType.colorSpace == 10 else 3  # GRAYSCALE = 10
            return tensor_meta(f.name, (1, c, int(t.imageType.height), int(t.imageType.width)),
                               np.float32, layout="NCHW")
        if kind == "dictionaryType":
            return tensor_meta(f.name, (), np.float64, layout=None)
        if kind in ("int64Type",):
            return tensor_meta(f.name, (), np.int64)
        if kind == "stringType":
            return tensor_meta(f.name, (), np.str_)
        return tensor_meta(f.name, (), np.float32)

    def input_kinds(self):
        return {f.name: f.type.WhichOneof("Type") for f in self.spec.description.input}

    def input_metadata(self):
        return [self._feature(f) for f in self.spec.description.input]

    def output_metadata(self):
        return [self._feature(f) for f in self.spec.description.output]

    def model_metadata(self):
        d = self.spec.description
        md = d.metadata
        info = {"author": md.author, "license": md.license, "short_description": md.shortDescription,
                "version": md.versionString, "user_defined": dict(md.userDefined),
                "spec_version": int(self.spec.specificationVersion)}
        return info

    def class_labels(self):
        """The classifier's labels, or None when the model is not a classifier."""
        return class_labels_of(self.spec)

    def _infer(self, feed):
        if not self.numbers:
            raise InputError(f"{self.name}: {self.structure_reason}")
        if not self.use_runtime:
            out = self.executor.run(feed)
            if self.executor.fp16_overflow and not getattr(self, "fp16_overflow", None):
                self.fp16_overflow = fp16_overflow_message(self.executor.fp16_overflow)
            return out
        from PIL import Image

        kinds = {f.name: f.type.WhichOneof("Type") for f in self.spec.description.input}
        inputs = {}
        for m in (self._feature(f) for f in self.spec.description.input):   # the program's own names
            x = feed[m.name]
            if kinds.get(m.name) == "imageType":
                # feed expected as NCHW 0..255 pixels: Core ML image inputs take PIL images
                arr = np.clip(np.rint(x[0].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
                inputs[m.name] = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
            else:
                inputs[m.name] = x
        res = self.mlmodel.predict(inputs)
        d = self.spec.description
        labels = self.class_labels()
        out = OrderedDict()
        for m in self.output_metadata():
            v = res[m.name]
            if m.name == d.predictedFeatureName:
                continue   # the label: the probabilities' argmax
            if isinstance(v, dict):
                if not labels:
                    continue
                by_text = {str(k): p for k, p in v.items()}   # int64 labels too
                v = [by_text[label] for label in labels]
            out[m.name] = np.asarray(v, np.float32)
        return out


def is_image_input(runner, name):
    return isinstance(runner, CoreMLRunner) and runner.input_kinds().get(name) == "imageType"
