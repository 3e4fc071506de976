"""Load PyTorch models safely: module factories, state dicts, TorchScript and .pt2 programs.

A state dict is read with `torch.load(weights_only=True)`, which unpickles only tensors and
plain containers. TorchScript archives and torch.export `.pt2` files are unpickled with full
pickle (arbitrary code can run while loading), so they are refused unless the user passes
`--trust-pickle`; so is a checkpoint that holds more than tensors.
"""

import importlib
import importlib.util
import os
import sys

from edge.errors import InputError, first_line, require

from converters import formats

PICKLE_HINT = ("pass --trust-pickle only if you trust where the file came from; or save a plain "
               "state dict (torch.save(model.state_dict(), path)) and use --torch-model")


def import_torch():
    return require("torch", "torch", "reading PyTorch models")


def import_factory(spec):
    """The callable named by 'module:factory'; module is dotted ('pkg.mod') or a file ('a/b.py')."""
    if not spec or ":" not in spec:
        raise InputError(f"--torch-model {spec!r} is not MODULE:FACTORY",
                         "e.g. --torch-model mypkg.nets:build or --torch-model nets.py:build")
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise InputError(f"--torch-model {spec!r} is not MODULE:FACTORY",
                         "e.g. --torch-model mypkg.nets:build or --torch-model nets.py:build")
    if mod_name.endswith(".py") or os.sep in mod_name or "/" in mod_name:
        path = os.path.abspath(mod_name)
        if not os.path.isfile(path):
            raise InputError(f"--torch-model: {mod_name} does not exist")
        name = "_edgeport_factory_" + os.path.splitext(os.path.basename(path))[0]
        module = sys.modules.get(name)
        if module is None or getattr(module, "__file__", None) != path:
            mspec = importlib.util.spec_from_file_location(name, path)
            if mspec is None or mspec.loader is None:
                raise InputError(f"--torch-model: cannot import {mod_name} as Python")
            module = importlib.util.module_from_spec(mspec)
            sys.modules[name] = module
            try:
                mspec.loader.exec_module(module)
            except Exception as e:
                sys.modules.pop(name, None)
                raise InputError(f"--torch-model: importing {mod_name} failed: "
                                 f"{type(e).__name__}: {e}") from None
    else:
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            raise InputError(f"--torch-model: no module named {e.name!r}",
                             "give a dotted module on the Python path or a path/to/file.py") from None
        except Exception as e:
            raise InputError(f"--torch-model: importing {mod_name} failed: "
                             f"{type(e).__name__}: {e}") from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise InputError(f"--torch-model: {mod_name} has no {attr!r}")
    if not callable(factory):
        raise InputError(f"--torch-model: {spec} is not callable",
                         "it must be a function or class returning the nn.Module")
    return factory


def load_state_dict(path, trust_pickle=False):
    """A checkpoint's tensors: {name: tensor} (or an nn.Module when trusted and pickled whole)."""
    torch = import_torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except Exception as e:
        first = first_line(e)
        if not trust_pickle and ("weights_only" in str(e) or "Unpickl" in type(e).__name__
                                 or "Unsupported global" in str(e)):
            raise InputError(f"{path} holds pickled Python objects beyond tensors; loading it "
                             "would run code from the file, so edgeport refuses it "
                             f"({first[:160]})", PICKLE_HINT) from None
        raise InputError(f"cannot read {path} as a PyTorch checkpoint: {first[:200]}") from None
    if isinstance(obj, torch.nn.Module):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(torch.is_tensor(v) for v in inner.values()):
                return inner
        tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
        if tensors:
            return obj
    raise InputError(f"{path} holds no state dict (found {type(obj).__name__})",
                     "save it with torch.save(model.state_dict(), path)")


def load_module_from_factory(factory_spec, weights_path=None, trust_pickle=False):
    """factory() with the state dict of `weights_path` loaded into it (strict), in eval mode."""
    torch = import_torch()
    factory = import_factory(factory_spec)
    try:
        module = factory()
    except Exception as e:
        raise InputError(f"--torch-model {factory_spec}() failed: {type(e).__name__}: {e}") from None
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"--torch-model {factory_spec}() returned {type(module).__name__}, "
                         "not a torch.nn.Module")
    if weights_path:
        state = load_state_dict(weights_path, trust_pickle)
        if isinstance(state, torch.nn.Module):
            module = state
        else:
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as e:
                msg = " ".join(str(e).split())
                raise InputError(f"the state dict {os.path.basename(weights_path)} does not fit "
                                 f"{factory_spec}(): {msg[:300]}",
                                 "check that the factory builds the architecture the weights are for"
                                 ) from None
    return module.eval()


def _refuse_untrusted(path, what, trust):
    if not trust:
        raise InputError(f"{path} is {what}, which PyTorch loads with full pickle: loading it can "
                         "run arbitrary code from the file, so edgeport refuses it by default",
                         PICKLE_HINT)


def load_torchscript(path, trust=False):
    _refuse_untrusted(path, "a TorchScript archive", trust)
    torch = import_torch()
    try:
        return torch.jit.load(path, map_location="cpu").eval()
    except Exception as e:
        raise InputError(f"cannot load TorchScript {path}: {first_line(e, 200)}") from None


def load_exported_program(path, trust=False):
    _refuse_untrusted(path, "a torch.export program (.pt2)", trust)
    torch = import_torch()
    try:
        return torch.export.load(path)
    except Exception as e:
        raise InputError(f"cannot load the ExportedProgram {path}: "
                         f"{first_line(e, 200)}") from None


def load_source(source, options):
    """(model, exported_program_or_None) for a PyTorch Artefact, honouring trust_pickle.

    `model` is an eval-mode nn.Module (or ScriptModule for TorchScript); for .pt2 sources it
    is `ep.module()` and the ExportedProgram itself is returned too.
    """
    fmt = source.format
    if fmt == formats.TORCH_MODULE:
        if not options.torch_model:
            raise InputError(f"{source.path} is a state dict", "pass --torch-model module:factory")
        return load_module_from_factory(options.torch_model, source.path, options.trust_pickle), None
    if fmt == formats.TORCHSCRIPT:
        return load_torchscript(source.path, options.trust_pickle), None
    if fmt == formats.TORCH_EXPORT:
        ep = load_exported_program(source.path, options.trust_pickle)
        return program_module(ep), ep
    raise InputError(f"{source.path} is {fmt}, not a PyTorch model")


def program_module(ep):
    """An nn.Module running ExportedProgram `ep` that tolerates .eval()/.train().

    `ep.module()` raises on train()/eval(), which torch.onnx.export and wrappers call; an
    exported program is already in inference form, so the mode switch is a no-op here.
    """
    torch = import_torch()

    class ExportedProgramModule(torch.nn.Module):
        def __init__(self, gm):
            super().__init__()
            self.program = gm

        def train(self, mode=True):
            self.training = bool(mode)
            return self

        def forward(self, *args):
            return self.program(*args)

    return ExportedProgramModule(ep.module())


def input_shape(options, source=None, exported=None):
    """The example input shape: --input-shape, else the .pt2's own, else the preprocessing spec."""
    if options.input_shape:
        shape = tuple(int(d) for d in options.input_shape)
        if any(d < 1 for d in shape):
            raise InputError(f"--input-shape {list(shape)} has a dimension below 1")
        return shape
    if exported is not None:
        shape = _exported_input_shape(exported)
        if shape:
            return shape
    spec = dict((source.preprocessing if source is not None else {}) or {})
    spec.update(options.preprocessing or {})
    if spec.get("size"):
        size = list(spec["size"])
        h, w = (size * 2)[:2] if len(size) == 1 else size[:2]
        c = int(spec.get("channels") or 3)
        layout = (spec.get("layout") or "NCHW").upper()
        return (1, c, int(h), int(w)) if layout == "NCHW" else (1, int(h), int(w), c)
    raise InputError("the PyTorch model's input shape is unknown",
                     "pass --input-shape, e.g. --input-shape 1 3 224 224, or --size H W")


def _exported_input_shape(ep):
    try:
        from torch.export.graph_signature import InputKind

        users = [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
        nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
        if len(users) != 1:
            return None
        val = nodes[users[0]].meta.get("val")
        return tuple(int(d) for d in val.shape)
    except Exception:
        return None


def flatten_outputs(y):
    """A model's output (tensor, tuple, list or dict, nested) as a flat list of tensors."""
    if isinstance(y, dict):
        return [t for v in y.values() for t in flatten_outputs(v)]
    if isinstance(y, (list, tuple)):
        return [t for v in y for t in flatten_outputs(v)]
    return [y]
