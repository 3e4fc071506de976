"""ONNX and ORT runner (onnxruntime, CPU)."""

from collections import OrderedDict

from converters.validation.runners.base import Runner, tensor_meta
from edge.errors import InputError, first_line, require
from edge.ort import ort_dtype, ort_session


def import_ort():
    return require("onnxruntime", "convert", "running ONNX/ORT models")


class OnnxRuntimeRunner(Runner):
    """`session` may be an InferenceSession or a callable building one (loaded lazily)."""

    format = "onnx"

    def __init__(self, path, metadata=None, fmt="onnx", session=None):
        super().__init__(path, metadata)
        self.format = fmt
        self._session_arg = session
        self.session = None

    def _activate(self):
        ort = import_ort()
        s = self._session_arg
        if s is None:
            try:
                s = ort_session(self.path)
            except Exception as e:  # onnxruntime raises its own exception classes
                raise InputError(f"onnxruntime cannot load {self.path}: "
                                 f"{first_line(e)}") from None
        elif callable(s):
            s = s()
        self.session = s
        self.info["runtime"] = f"onnxruntime {ort.__version__}"
        self.precision = "reduced" if self._has_reduced_precision() else "float"

    def _has_reduced_precision(self):
        ins = [*self.session.get_inputs(), *self.session.get_outputs()]
        reduced = ("float16", "int8", "uint8")
        return any(ort_dtype(i.type).name in reduced for i in ins) \
            and not any(ort_dtype(i.type).name == "uint8" for i in self.session.get_inputs())

    def _deactivate(self):
        self.session = None

    def input_metadata(self):
        return [tensor_meta(i.name, i.shape, ort_dtype(i.type)) for i in self.session.get_inputs()]

    def dim_names(self):
        return {i.name: [d if isinstance(d, str) and d else None for d in i.shape]
                for i in self.session.get_inputs()}

    def output_metadata(self):
        return [tensor_meta(o.name, o.shape, ort_dtype(o.type)) for o in self.session.get_outputs()]

    def _infer(self, feed):
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {i.name: feed[i.name] for i in self.session.get_inputs()})
        return OrderedDict(zip(names, values))
