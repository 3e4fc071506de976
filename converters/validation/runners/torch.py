"""PyTorch runner: TorchScript, ExportedProgram (.pt2), or a module factory with a state dict.

PyTorch has no tensor names: inputs are named after the ExportedProgram's signature or
`input_N`, outputs `output_N`, and outputs are matched to the converted model's by position.
"""

import os
from collections import OrderedDict

import numpy as np

from converters.routes.torch_loading import (
    exported_inputs,
    flatten_outputs,
    forward_input_names,
    import_torch,
    plan_script_call,
    schema_text,
    script_arguments,
    state_attributes,
)
from converters.validation.runners.base import Runner, tensor_meta
from edge.errors import InputError


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

        from converters.options import ModelLoading
        from converters.routes.torch_loading import load_source

        if self.format not in ("torchscript", "torch-export", "torch-module"):
            raise InputError(f"{self.path}: not a PyTorch format ({self.format})")
        art = SimpleNamespace(path=self.path, format=self.format)
        opts = ModelLoading(torch_model=self.factory, trust_pickle=self.trust_pickle)
        model, exported = load_source(art, opts)
        self._exported = exported
        return model

    def _deactivate(self):
        self.model = None

    def keeps_state(self):
        """True for a TorchScript module whose forward assigns its own attributes (state kept
        between calls): validation runs it fresh over the samples in order (state.reset)."""
        if self.format != "torchscript" or self.model is None:
            return False
        if getattr(self, "_keeps_state", None) is None:
            self._keeps_state = bool(state_attributes(self.model))
        return self._keeps_state

    def input_metadata(self):
        if self._inputs is not None:
            return self._inputs
        ep = getattr(self, "_exported", None)
        metas = []
        if ep is not None:
            metas = [tensor_meta(name, shape, dtype) for name, shape, dtype in exported_inputs(ep) or ()]
        if not metas and ep is None:
            metas = self._script_inputs()
        if not metas:
            name = (forward_input_names(self.model, ep) or ["input_0"])[0]   # as the export names it
            given = dict(self.overrides.shapes) if self.overrides is not None else {}
            shape = (self.input_shape or given.get(name) or given.get(None)
                     or _shape_from_metadata(self.metadata))
            if not shape:
                raise InputError(f"the input shape of {os.path.basename(self.path)} is unknown",
                                 f"pass --input-shapes {name}:[1,3,224,224] (its real shape)")
            metas = [tensor_meta(name, tuple(shape), np.float32)]
        if self.input_shape and len(metas) == 1:
            metas = [metas[0]._replace(shape=tuple(self.input_shape))]
        self._inputs = metas
        return metas

    def forward_schema(self):
        """'(x: Tensor, sr: int)' of a TorchScript module's forward, else None."""
        args = script_arguments(self.model)
        return schema_text(args) if args is not None else None

    def _script_inputs(self):
        """The forward signature of a TorchScript module: one TensorMeta per tensor argument
        (shape from --input-shapes / --data / --input-shape), a value per other argument (from
        --arg NAME=VALUE, else its default); [] when the signature cannot be read or has a
        single tensor argument (the historical single-input path)."""
        args = script_arguments(self.model)
        if not args or (len(args) == 1 and str(args[0].type) == "Tensor"):
            return []
        tensors, self._constants, self._order = plan_script_call(
            args, self.overrides, os.path.basename(self.path), self.input_shape)
        self.info["forward"] = schema_text(args)
        if self._constants:
            self.info["fixed_arguments"] = dict(self._constants)
        return [tensor_meta(name, shape, dtype) for name, shape, dtype in tensors]

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


def _shape_from_metadata(metadata):
    """(1, C, H, W) or (1, H, W, C) from a sidecar's preprocessing spec, when it has one."""
    pre = (metadata or {}).get("preprocessing") or {}
    size = pre.get("size")
    if not size:
        return None
    c = int(pre.get("channels", 3))
    h, w = (size * 2)[:2] if len(size) == 1 else size[:2]
    return (1, c, h, w) if (pre.get("layout") or "NCHW").upper() == "NCHW" else (1, h, w, c)
