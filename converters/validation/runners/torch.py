"""PyTorch runner: TorchScript, ExportedProgram (.pt2), or a module factory with a state dict.

PyTorch has no tensor names: inputs are named after the ExportedProgram's signature or
`input_N`, outputs `output_N`, and outputs are matched to the converted model's by position.
"""

import os
from collections import OrderedDict

import numpy as np

from edge.errors import InputError

from converters.routes.torch_loading import flatten_outputs, import_torch
from converters.validation.runners.base import Runner, tensor_meta


class TorchRunner(Runner):
    """`model` may be an nn.Module/callable or a function building one (lazy)."""

    format = "torchscript"
    synthetic_names = True

    def __init__(self, path, metadata=None, fmt="torchscript", model=None, factory=None,
                 input_shape=None, trust_pickle=False, overrides=None):
        super().__init__(path, metadata)
        self.overrides = overrides        # signature.InputOverrides (shapes, --data, --arg)
        self._constants = {}              # non-tensor forward arguments: name -> value
        self._order = None                # forward's arguments in order (tensors and constants)
        self.format = fmt
        self._model_arg = model
        self.factory = factory
        self.input_shape = tuple(input_shape) if input_shape else None
        self.trust_pickle = trust_pickle
        self.model = None
        self._inputs = None

    def _activate(self):
        torch = import_torch()
        m = self._model_arg
        if m is None:
            m = self._load(torch)
        elif not isinstance(m, torch.nn.Module) and callable(m) and getattr(m, "__code__", None) \
                and m.__code__.co_argcount == 0:
            m = m()
        if hasattr(m, "eval") and getattr(self, "_exported", None) is None:
            m.eval()  # an ExportedProgram's module() is already traced in eval mode
        self.model = m
        self.info["runtime"] = f"torch {torch.__version__}"

    def _load(self, torch):
        """Through converters.routes.torch_loading (safe loading: pickles only with trust_pickle)."""
        from types import SimpleNamespace

        from converters.routes.torch_loading import load_source

        if self.format not in ("torchscript", "torch-export", "torch-module"):
            raise InputError(f"{self.path}: not a PyTorch format ({self.format})")
        art = SimpleNamespace(path=self.path, format=self.format)
        opts = SimpleNamespace(torch_model=self.factory, trust_pickle=self.trust_pickle)
        model, exported = load_source(art, opts)
        self._exported = exported
        return model

    def _deactivate(self):
        self.model = None

    def input_metadata(self):
        if self._inputs is not None:
            return self._inputs
        ep = getattr(self, "_exported", None)
        metas = []
        if ep is not None:
            try:
                from torch.export.graph_signature import InputKind

                user = [s.arg.name for s in ep.graph_signature.input_specs
                        if s.kind == InputKind.USER_INPUT]
                nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
                for name in user:
                    val = nodes[name].meta.get("val")
                    shape = tuple(int(d) if str(d).isdigit() else None for d in val.shape)
                    metas.append(tensor_meta(name, shape, _np_dtype(val.dtype)))
            except Exception:
                metas = []
        if not metas and ep is None:
            metas = self._script_inputs()
        if not metas:
            shape = self.input_shape or _shape_from_metadata(self.metadata)
            if not shape:
                raise InputError(f"the input shape of {os.path.basename(self.path)} is unknown",
                                 "pass --input-shape, e.g. --input-shape 1 3 224 224")
            metas = [tensor_meta("input_0", shape, np.float32)]
        if self.input_shape and len(metas) == 1:
            metas = [metas[0]._replace(shape=tuple(self.input_shape))]
        self._inputs = metas
        return metas

    def forward_schema(self):
        """'(x: Tensor, sr: int)' of a TorchScript module's forward, else None."""
        try:
            return _schema(list(self.model.forward.schema.arguments)[1:])
        except Exception:
            return None

    def _script_inputs(self):
        """The forward signature of a TorchScript module: one TensorMeta per tensor argument
        (shape from --input-shapes / --data / --input-shape), a value per other argument (from
        --arg NAME=VALUE, else its default); [] when the signature cannot be read or has a
        single tensor argument (the historical single-input path)."""
        try:
            args = list(self.model.forward.schema.arguments)[1:]  # without self
        except Exception:
            return []
        if not args:
            return []
        ov = self.overrides
        shapes = dict(ov.shapes) if ov is not None else {}
        data = (ov.data or {}) if ov is not None else {}
        values = dict(getattr(ov, "args", None) or {}) if ov is not None else {}
        tensors = [a for a in args if str(a.type) == "Tensor"]
        if len(args) == 1 and tensors:
            return []
        metas, order = [], []
        for a in args:
            kind = str(a.type)
            if kind == "Tensor":
                shape = shapes.get(a.name) or (shapes.get(None) if len(tensors) == 1 else None)
                dtype = np.float32
                if shape is None and a.name in data:
                    from converters.validation.signature import data_samples

                    arr = np.asarray(data[a.name])
                    shape, dtype = data_samples(arr, arr.shape)[0].shape, arr.dtype
                if shape is None and len(tensors) == 1 and self.input_shape:
                    shape = self.input_shape
                if shape is None:
                    raise InputError(f"the shape of argument '{a.name}' of "
                                     f"{os.path.basename(self.path)}'s forward{_schema(args)} is "
                                     "unknown (TorchScript records no shapes)",
                                     f"pass --input-shapes {a.name}:[...]")
                metas.append(tensor_meta(a.name, tuple(shape), dtype))
                order.append(("tensor", a.name))
                continue
            if a.name in values:
                value = _cast(values[a.name], kind, a.name)
            elif a.has_default_value():
                value = a.default_value
            else:
                raise InputError(f"argument '{a.name}' ({kind}) of {os.path.basename(self.path)}'s "
                                 f"forward{_schema(args)} needs a value",
                                 f"pass --arg {a.name}=VALUE")
            self._constants[a.name] = value
            order.append(("const", a.name))
        self._order = order
        self.info["forward"] = _schema(args)
        return metas

    def _infer(self, feed):
        torch = import_torch()
        if self._order is not None:
            self.input_metadata()
            xs = [torch.from_numpy(np.ascontiguousarray(feed[n])) if k == "tensor"
                  else self._constants[n] for k, n in self._order]
            with torch.no_grad():
                y = self.model(*xs)
            ys = flatten_outputs(y)
            return OrderedDict((f"output_{i}", t.detach().cpu().numpy()) for i, t in enumerate(ys))
        xs = [torch.from_numpy(np.ascontiguousarray(feed[m.name])) for m in self.input_metadata()]
        with torch.no_grad():
            y = self.model(*xs)
        ys = flatten_outputs(y)
        return OrderedDict((f"output_{i}", t.detach().cpu().numpy()) for i, t in enumerate(ys))


def _schema(args):
    return "(" + ", ".join(f"{a.name}: {a.type}" for a in args) + ")"


def _cast(text, kind, name):
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            if str(text).lower() in ("1", "true", "yes"):
                return True
            if str(text).lower() in ("0", "false", "no"):
                return False
            raise ValueError(text)
        if kind == "str":
            return str(text)
    except ValueError:
        raise InputError(f"--arg {name}={text}: argument '{name}' takes a {kind} value") from None
    raise InputError(f"argument '{name}' has type {kind}, which --arg cannot give",
                     "wrap the module so that forward takes tensors and int/float/bool/str")


def _np_dtype(torch_dtype):
    return np.dtype(str(torch_dtype).replace("torch.", ""))


def _shape_from_metadata(metadata):
    """(1, C, H, W) or (1, H, W, C) from a sidecar's preprocessing spec, when it has one."""
    pre = (metadata or {}).get("preprocessing") or {}
    size = pre.get("size")
    if not size:
        return None
    c = int(pre.get("channels", 3))
    h, w = (size * 2)[:2] if len(size) == 1 else size[:2]
    return (1, c, h, w) if (pre.get("layout") or "NCHW").upper() == "NCHW" else (1, h, w, c)
