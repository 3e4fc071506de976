"""TF runners: Keras (.keras/.h5) and SavedModel (its serving signature)."""

from collections import OrderedDict

import numpy as np

from converters.validation.runners.base import Runner, tensor_meta
from edge.errors import InputError


class KerasRunner(Runner):
    format = "keras"

    def __init__(self, path, metadata=None, model=None, unsafe=False):
        super().__init__(path, metadata)
        self._model_arg = model
        self.unsafe = unsafe
        self.model = None

    def _activate(self):
        from converters.options import ModelLoading
        from converters.routes.tf_loading import load_keras

        m = self._model_arg
        if m is None:
            m = load_keras(self.path, ModelLoading(keras_unsafe=self.unsafe))
        elif callable(m) and not hasattr(m, "inputs"):
            m = m()
        self.model = m

    def _deactivate(self):
        self.model = None

    def input_metadata(self):
        return [tensor_meta(_clean(i.name), tuple(i.shape), np.dtype(str(i.dtype)))
                for i in self.model.inputs]

    def _output_names(self):
        names = list(getattr(self.model, "output_names", None) or [])
        if len(names) != len(self.model.outputs):
            names = [_clean(o.name) for o in self.model.outputs]
        return names

    def output_metadata(self):
        return [tensor_meta(n, tuple(o.shape), np.dtype(str(o.dtype)))
                for n, o in zip(self._output_names(), self.model.outputs)]

    def _infer(self, feed):
        xs = [feed[m.name] for m in self.input_metadata()]
        y = self.model(xs if len(xs) > 1 else xs[0], training=False)
        names = self._output_names()
        ys = list(y.values()) if isinstance(y, dict) else (list(y) if isinstance(y, (list, tuple)) else [y])
        return OrderedDict((n, np.asarray(v)) for n, v in zip(names, ys))


class SavedModelRunner(Runner):
    format = "savedmodel"

    def __init__(self, path, metadata=None, signature="serving_default"):
        super().__init__(path, metadata)
        self.signature = signature
        self.fn = None

    def _activate(self):
        from converters.routes.tf_loading import load_saved_model

        self._loaded = load_saved_model(self.path)
        sigs = getattr(self._loaded, "signatures", {}) or {}
        if not sigs:
            raise InputError(f"SavedModel {self.path} has no serving signature")
        name = self.signature if self.signature in sigs else sorted(sigs)[0]
        self.fn = sigs[name]
        _, kw = self.fn.structured_input_signature
        self._in = OrderedDict((n, kw[n]) for n in sorted(kw))
        self._out = OrderedDict((n, self.fn.structured_outputs[n]) for n in sorted(self.fn.structured_outputs))

    def _deactivate(self):
        self.fn = None

    def input_metadata(self):
        return [tensor_meta(n, tuple(s.shape), s.dtype.as_numpy_dtype) for n, s in self._in.items()]

    def output_metadata(self):
        return [tensor_meta(n, tuple(s.shape), s.dtype.as_numpy_dtype) for n, s in self._out.items()]

    def _infer(self, feed):
        res = self.fn(**{n: feed[n] for n in self._in})
        return OrderedDict((n, np.asarray(res[n])) for n in self._out)


def _clean(name):
    return name.split(":")[0].replace("/", "_") or "input"
