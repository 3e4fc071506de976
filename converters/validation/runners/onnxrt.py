"""ONNX and ORT runner (onnxruntime, CPU)."""

from collections import OrderedDict

import numpy as np

from converters.validation.runners.base import Runner, tensor_meta
from edge.errors import InputError, first_line, require

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
}


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
            opts = ort.SessionOptions()
            opts.log_severity_level = 4  # errors reach us as exceptions: one line, not two
            try:
                s = ort.InferenceSession(self.path, sess_options=opts,
                                         providers=["CPUExecutionProvider"])
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
        return any(i.type in ("tensor(float16)", "tensor(int8)", "tensor(uint8)") for i in ins) \
            and not any(i.type == "tensor(uint8)" for i in self.session.get_inputs())

    def _deactivate(self):
        self.session = None

    def input_metadata(self):
        return [tensor_meta(i.name, i.shape, _ORT_TYPES.get(i.type, np.float32))
                for i in self.session.get_inputs()]

    def dim_names(self):
        return {i.name: [d if isinstance(d, str) and d else None for d in i.shape]
                for i in self.session.get_inputs()}

    def output_metadata(self):
        return [tensor_meta(o.name, o.shape, _ORT_TYPES.get(o.type, np.float32))
                for o in self.session.get_outputs()]

    def _infer(self, feed):
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {i.name: feed[i.name] for i in self.session.get_inputs()})
        return OrderedDict(zip(names, values))
