"""Core ML runner: numbers through coremltools on macOS; on Linux only the structure.

On Linux coremltools can read a model's spec but cannot run it, so `numbers` is False and
validation compares inputs, outputs, shapes, dtypes, metadata and classifier labels only,
and says plainly that numbers were not compared.
"""

import platform
from collections import OrderedDict

import numpy as np

from edge.errors import InputError, MissingDependency, first_line

from converters.validation.runners.base import Runner, tensor_meta

_ARRAY_TYPES = {65568: np.float32, 65600: np.float64, 65552: np.float16, 131104: np.int32,
                131080: np.int8}


def import_coremltools():
    try:
        import coremltools
    except ImportError:
        raise MissingDependency("coremltools", "convert", "reading Core ML models") from None
    return coremltools


class CoreMLRunner(Runner):
    format = "coreml"

    def __init__(self, path, metadata=None):
        super().__init__(path, metadata)
        self.numbers = platform.system() == "Darwin"
        self.spec = None
        self.mlmodel = None

    def _activate(self):
        from converters.artefact import PackageCopy

        ct = import_coremltools()
        # Read from a checked private copy: coremltools rewrites a package's Manifest.json and
        # follows the paths it names; the user's package is never opened for writing.
        copy = PackageCopy(self.path)
        try:
            if self.numbers:
                self.mlmodel = ct.models.MLModel(copy.path, compute_units=ct.ComputeUnit.CPU_ONLY)
                self.spec = self.mlmodel.get_spec()
            else:
                self.spec = ct.utils.load_spec(copy.path)
        except Exception as e:
            copy.close()
            raise InputError(f"coremltools cannot read {self.path}: {first_line(e)}") from None
        if self.numbers:
            self._copy = copy  # the compiled model may read its weights lazily: kept until deactivate
        else:
            copy.close()
        self.info["runtime"] = f"coremltools {ct.__version__}" + ("" if self.numbers else
                                                                 " (structure only on this OS)")

    def _deactivate(self):
        self.mlmodel = None
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
            raise InputError("Core ML models run only on macOS; on this OS only their structure "
                             "is checked")
        from PIL import Image

        kinds = self.input_kinds()
        inputs = {}
        for m in self.input_metadata():
            x = feed[m.name]
            if kinds.get(m.name) == "imageType":
                # feed expected as NCHW 0..255 pixels: Core ML image inputs take PIL images
                arr = np.clip(np.rint(x[0].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
                inputs[m.name] = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
            else:
                inputs[m.name] = x
        res = self.mlmodel.predict(inputs)
        out = OrderedDict()
        for m in self.output_metadata():
            v = res[m.name]
            if isinstance(v, dict):
                continue
            out[m.name] = np.asarray(v)
        return out


def class_labels_of(spec):
    """Class labels of a Core ML spec (neural network, pipeline or ML program classifier)."""
    kind = spec.WhichOneof("Type")
    holders = []
    if kind in ("neuralNetworkClassifier", "pipelineClassifier", "treeEnsembleClassifier",
                "glmClassifier", "supportVectorClassifier"):
        holders.append(getattr(spec, kind))
    if kind == "pipelineClassifier":
        holders.extend(m for m in spec.pipelineClassifier.pipeline.models)
    if kind == "pipeline":
        holders.extend(spec.pipeline.models)
    for h in holders:
        if hasattr(h, "WhichOneof") and h.DESCRIPTOR.oneofs_by_name.get("ClassLabels"):
            which = h.WhichOneof("ClassLabels")
            if which == "stringClassLabels":
                return list(h.stringClassLabels.vector)
            if which == "int64ClassLabels":
                return [str(x) for x in h.int64ClassLabels.vector]
        if hasattr(h, "WhichOneof") and h.DESCRIPTOR.oneofs_by_name.get("Type"):
            found = class_labels_of(h)
            if found:
                return found
    if kind == "mlProgram" and spec.description.predictedFeatureName:
        return _mlprogram_class_labels(spec.mlProgram)
    return None


def _mlprogram_class_labels(program):
    """Labels of an ML program classifier: the `classes` argument of its `classify` op,
    an immediate list of string (or int) scalars, or the name of a const op holding them."""
    for function in program.functions.values():
        for block in function.block_specializations.values():
            consts = {op.outputs[0].name: op.attributes.get("val") for op in block.operations
                      if op.type == "const" and op.outputs}
            for op in block.operations:
                if op.type != "classify" or "classes" not in op.inputs:
                    continue
                arg = op.inputs["classes"].arguments[0]
                value = arg.value if arg.WhichOneof("binding") == "value" else consts.get(arg.name)
                if value is not None:
                    return _literal_strings(value)
    return None


def _literal_strings(value):
    imm = value.immediateValue
    if imm.WhichOneof("value") == "list":
        return [s for v in imm.list.values for s in _literal_strings(v)]
    t = imm.tensor
    kind = t.WhichOneof("value")
    if kind == "strings":
        return list(t.strings.values)
    if kind in ("ints", "longInts"):
        return [str(x) for x in getattr(t, kind).values]
    return []


def is_image_input(runner, name):
    return isinstance(runner, CoreMLRunner) and runner.input_kinds().get(name) == "imageType"
