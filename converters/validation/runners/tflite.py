"""TFLite runner (float, int8, Edge TPU), through `edge.interpreter.make_interpreter`, so the
path validated is the one users run on the device."""

import os
from collections import OrderedDict

import numpy as np

from converters.validation.runners.base import Runner, dequantize, tensor_meta
from edge.errors import EdgeTPUError, InputError, MissingDependency
from edge.tflite_model import TFLiteModel

_NP = {"FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT8": np.int8,
       "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
       "BOOL": np.bool_}


class NeedsEdgeTPU(InputError):
    """A compiled model on a machine without an Edge TPU (exit 2 unless outputs are loaded)."""


class EdgeTPUUnavailable(MissingDependency):
    """Raised by validate_pair for a compiled model on a machine without an Edge TPU: like a
    missing package, the hop is reported as not validated rather than as failed."""

    def __init__(self, message, hint=None):
        InputError.__init__(self, message, hint)
        self.package, self.extra = "libedgetpu + an Edge TPU", None


class TFLiteRunner(Runner):
    format = "tflite"

    def __init__(self, path, metadata=None, device="auto", runtime=None, fmt=None):
        super().__init__(path, metadata)
        self.device = device
        self.runtime = runtime
        self.model = TFLiteModel.load(self.path)
        self.format = fmt or "tflite"
        self.compiled = self.model.is_edgetpu_compiled()
        if self.compiled:
            self.format = "edgetpu"
        self.precision = "float" if self.format == "tflite" and not _reduced(self.model) else "reduced"
        self.interpreter = None

    def _activate(self):
        from converters.validation.runners import tflite_reference
        from edge.interpreter import make_interpreter

        custom = self.model.custom_ops()
        if tflite_reference.covers(custom):   # e.g. MediaPipe's Convolution2DTransposeBias
            self._activate_reference(tflite_reference, custom)
            return
        try:
            self.interpreter, info = make_interpreter(self.path, device=self.device,
                                                      runtime=self.runtime)
        except EdgeTPUError:
            raise NeedsEdgeTPU(
                f"{os.path.basename(self.path)} is compiled for the Edge TPU and no Edge TPU is "
                "usable here, so its numbers cannot be computed on this machine",
                "run `edgeport validate SOURCE MODEL_edgetpu.tflite --save-outputs FILE` on a device "
                "with an Edge TPU, then pass --load-outputs FILE here") from None
        self._allocated = info.pop("allocated", True)
        self.info.update(info)
        self._inputs = self.interpreter.get_input_details()
        self._outputs = self.interpreter.get_output_details()
        self._names = _signature_names(self.interpreter)

    def _activate_reference(self, tflite_reference, custom):
        g = self.model.main
        self.interpreter = tflite_reference.ReferenceInterpreter(
            self.path, self.runtime, original_inputs=g.inputs, original_outputs=g.outputs)
        self._allocated = True
        self.info.update(runtime=self.interpreter.backend, device="cpu",
                         note=tflite_reference.NOTE.format(ops=", ".join(custom)))
        self._inputs = self.interpreter.get_input_details()
        self._outputs = self.interpreter.get_output_details()
        self._names = {}

    def _deactivate(self):
        self.interpreter = None

    def _meta_from_model(self, indices):
        g = self.model.main
        out = []
        for i in indices:
            t = g.tensors[i]
            q = t.quantization
            scale = q.scale[0] if q and len(q.scale) == 1 else 0.0
            zp = q.zero_point[0] if q and len(q.zero_point) >= 1 and scale else 0
            shape = t.shape_signature or t.shape
            out.append(tensor_meta(t.name, shape, _NP.get(t.dtype, np.float32), scale, zp))
        return out

    def input_metadata(self):
        if self.interpreter is None:  # no interpreter (e.g. compiled model, no TPU): parse the file
            return self._meta_from_model(self.model.main.inputs)
        return [tensor_meta(d["name"], d.get("shape_signature", d["shape"]), d["dtype"],
                            *d.get("quantization", (0.0, 0))) for d in self._inputs]

    def output_metadata(self):
        return self._meta_from_model(self.model.main.outputs)

    def _infer(self, feed):
        it = self.interpreter
        resized = not self._allocated
        for d in self._inputs:
            x = np.asarray(feed[d["name"]])
            if tuple(x.shape) != tuple(d["shape"]):
                it.resize_tensor_input(d["index"], x.shape)
                resized = True
        if resized:  # every input resized first, then one allocation
            it.allocate_tensors()
            self._allocated = True
            self._inputs = it.get_input_details()
            self._outputs = it.get_output_details()
        for d in self._inputs:
            x = np.asarray(feed[d["name"]])
            it.set_tensor(d["index"], x.astype(d["dtype"], copy=False))
        it.invoke()
        out = OrderedDict()
        for d in self._outputs:
            y = it.get_tensor(d["index"])
            scale, zp = d.get("quantization", (0.0, 0))
            if scale and np.issubdtype(y.dtype, np.integer):
                y = dequantize(y, scale, zp)
            out[self._names.get(d["index"], d["name"])] = np.array(y)
        return out


def _signature_names(interpreter):
    """{output tensor index: signature key} when the keys are real names (not output_N)."""
    try:
        sigs = interpreter._get_full_signature_list() or {}
    except Exception:
        return {}
    if len(sigs) != 1:
        return {}
    outputs = next(iter(sigs.values())).get("outputs", {})
    if all(k.startswith("output_") for k in outputs):
        return {}
    return {int(i): k for k, i in outputs.items()}


def _reduced(model):
    """True when a float TFLite model still computes in reduced precision (float16 or int8
    weights: dynamic-range or float16 quantization)."""
    g = model.main
    for op in g.operators:
        for t in op.inputs:
            if t >= 0 and g.tensors[t].dtype in ("INT8", "UINT8", "FLOAT16"):
                return True
    return False
