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

from converters import formats
from edge.errors import InputError, first_line, require

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


# The keys under which training scripts save the model's weights inside a bigger checkpoint
# ({'model_state': ..., 'optimizer_state': ..., 'step': ...}), in order of preference.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "ema")


def _is_state_dict(obj, torch):
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def _unwrap_checkpoint(path, obj, torch, say):
    """The state dict (or trusted nn.Module) inside checkpoint `obj`; which key held it is said."""
    if isinstance(obj, torch.nn.Module) or _is_state_dict(obj, torch):
        return obj
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and _is_state_dict(inner.get("module"), torch):
                inner, key = inner["module"], f"{key}.module"  # an EMA wrapper: {'module': weights}
            if _is_state_dict(inner, torch) or isinstance(inner, torch.nn.Module):
                others = [k for k in obj if k != key.split(".")[0]]
                say(f"{os.path.basename(path)}: using the weights under the checkpoint key '{key}'"
                    + (f" (also holds {', '.join(repr(str(k)) for k in others[:6])}"
                       f"{', ...' if len(others) > 6 else ''})" if others else ""))
                return inner
        tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
        if tensors and not any(isinstance(v, dict) for v in obj.values()):
            say(f"{os.path.basename(path)}: its non-tensor entries "
                f"{', '.join(repr(str(k))[:40] for k in obj if k not in tensors)} are not weights; ignored")
            return tensors
        keys = ", ".join(repr(str(k))[:40] for k in list(obj)[:12]) + (", ..." if len(obj) > 12 else "")
        raise InputError(f"{path} holds no state dict: a checkpoint with keys {keys or 'none'}, and "
                         f"none of {', '.join(WRAPPER_KEYS)} holds a dict of tensors",
                         "save it with torch.save(model.state_dict(), path)")
    raise InputError(f"{path} holds no state dict (found {type(obj).__name__})",
                     "save it with torch.save(model.state_dict(), path)")


def load_state_dict(path, trust_pickle=False, say=None):
    """A checkpoint's tensors: {name: tensor} (or an nn.Module when trusted and pickled whole).

    A checkpoint that wraps the weights with other state ({'model_state': ..., 'optimizer': ...})
    is unwrapped under the first of WRAPPER_KEYS that holds tensors; `say` is told which."""
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
    return _unwrap_checkpoint(path, obj, torch, say or (lambda message: None))


def load_module_from_factory(factory_spec, weights_path=None, trust_pickle=False, say=None):
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
        state = load_state_dict(weights_path, trust_pickle, say)
        if isinstance(state, torch.nn.Module):
            module = state
        else:
            if (state and all(k.startswith("module.") for k in state)
                    and not any(k.startswith("module.") for k in module.state_dict())):
                state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel
                (say or (lambda message: None))(f"{os.path.basename(weights_path)}: the 'module.' "
                                                "prefix of DataParallel is stripped from its keys")
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


def _progress_of(options):
    """convert's progress lines (ConvertOptions.progress); none for the bare ModelLoading a
    validation runner passes."""
    from converters.options import ConvertOptions

    return options.progress if isinstance(options, ConvertOptions) else None


def load_source(source, options):
    """(model, exported_program_or_None) for a PyTorch Artefact, honouring trust_pickle.

    `model` is an eval-mode nn.Module (or ScriptModule for TorchScript); for .pt2 sources it
    is `ep.module()` and the ExportedProgram itself is returned too.
    """
    fmt = source.format
    if fmt == formats.TORCH_MODULE:
        if not options.torch_model:
            raise InputError(f"{source.path} is a state dict", "pass --torch-model module:factory")
        return load_module_from_factory(options.torch_model, source.path, options.trust_pickle,
                                        _progress_of(options)), None
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
    inputs = exported_inputs(ep)
    if not inputs or len(inputs) != 1 or any(d is None for d in inputs[0][1]):
        return None
    return inputs[0][1]


def exported_inputs(ep):
    """[(name, shape with None for a symbolic dimension, numpy dtype)] of a .pt2's user
    inputs, in order; None when the graph signature cannot be read."""
    try:
        import numpy as np
        from torch.export.graph_signature import InputKind

        users = [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
        nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
        out = []
        for name in users:
            val = nodes[name].meta.get("val")
            shape = tuple(int(d) if str(d).isdigit() else None for d in val.shape)
            out.append((name, shape, np.dtype(str(val.dtype).replace("torch.", ""))))
        return out
    except Exception:
        return None


def flatten_outputs(y):
    """A model's output (tensor, tuple, list or dict, nested) as a flat list of tensors."""
    if isinstance(y, dict):
        return [t for v in y.values() for t in flatten_outputs(v)]
    if isinstance(y, (list, tuple)):
        return [t for v in y for t in flatten_outputs(v)]
    return [y]


# -- forward signatures: several tensors, and non-tensor arguments fixed by --arg -------------

def script_arguments(model):
    """A TorchScript module's forward arguments (schema Arguments, without self), else None."""
    try:
        return list(model.forward.schema.arguments)[1:]
    except Exception:
        return None


def forward_input_names(model, exported=None):
    """The names a PyTorch model gives its inputs, from the model itself: a .pt2's signature,
    a TorchScript forward's schema (argument names, e.g. 'x'), else the Python forward's
    parameters (inspect.signature); None when none can be read. Every hop's input names follow
    these, so --input-shapes/--data/--val-range keyed by them work on every artefact."""
    if exported is not None:
        users = exported_inputs(exported)
        return [n for n, _, _ in users] if users else None
    args = script_arguments(model)
    if args is not None:
        return [a.name for a in args] or None
    import inspect

    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in params if p.kind in kinds]
    return names or None


def schema_text(args):
    """'(x: Tensor, sr: int)'."""
    return "(" + ", ".join(f"{a.name}: {a.type}" for a in args) + ")"


def cast_argument(text, kind, name):
    """The --arg text for a forward argument of TorchScript type `kind` (int/float/bool/str)."""
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


def plan_script_call(args, overrides, model_name, single_shape=None):
    """How to call a TorchScript forward with arguments `args` (script_arguments).

    Each tensor argument takes its shape from --input-shapes NAME:[..] (a bare shape when it
    is the only tensor), else from its --data array, else `single_shape` when it is the only
    tensor; TorchScript records no shapes, so a tensor left without one is an InputError
    naming the flag. Each other argument takes --arg NAME=VALUE, else its default, else an
    InputError naming the argument.

    Returns (tensors [(name, shape, numpy dtype)], fixed {name: value}, order [(kind, name)]
    with kind "tensor" or "const", in the forward's order).
    """
    import numpy as np

    shapes = dict(overrides.shapes) if overrides is not None else {}
    data = (overrides.data or {}) if overrides is not None else {}
    values = dict(getattr(overrides, "args", None) or {}) if overrides is not None else {}
    n_tensors = sum(str(a.type) == "Tensor" for a in args)
    sig = schema_text(args)
    unknown = [n for n in values if n not in {a.name for a in args}]
    if unknown:
        raise InputError(f"--arg {unknown[0]}: {model_name}'s forward{sig} has no argument "
                         f"'{unknown[0]}'")
    tensors, fixed, order = [], {}, []
    for a in args:
        kind = str(a.type)
        if kind == "Tensor":
            shape = shapes.get(a.name) or (shapes.get(None) if n_tensors == 1 else None)
            dtype = np.dtype(np.float32)
            if shape is None and a.name in data:
                arr = np.asarray(data[a.name])
                shape, dtype = arr.shape, arr.dtype
            if shape is None and n_tensors == 1 and single_shape:
                shape = single_shape
            if shape is None:
                raise InputError(f"the shape of argument '{a.name}' of {model_name}'s forward{sig} "
                                 "is unknown (TorchScript records no shapes)",
                                 f"pass --input-shapes {a.name}:[...]")
            tensors.append((a.name, tuple(int(d) for d in shape), dtype))
            order.append(("tensor", a.name))
            continue
        if a.name in values:
            fixed[a.name] = cast_argument(values[a.name], kind, a.name)
        elif a.has_default_value():
            fixed[a.name] = a.default_value
        else:
            raise InputError(f"argument '{a.name}' ({kind}) of {model_name}'s forward{sig} "
                             "needs a value", f"pass --arg {a.name}=VALUE")
        order.append(("const", a.name))
    return tensors, fixed, order


def state_attributes(model):
    """Names of module attributes a TorchScript forward assigns (state kept between calls)."""
    try:
        torch = import_torch()
        graph = model.forward.graph.copy()
        torch._C._jit_pass_inline(graph)
    except Exception:
        return []
    found = set()

    def walk(block):
        for node in block.nodes():
            if node.kind() == "prim::SetAttr":
                found.add(node.s("name"))
            for b in node.blocks():
                walk(b)

    walk(graph)
    return sorted(found)


def fix_script_arguments(model, order, fixed):
    """A scripted module whose forward takes the tensors of `order` only and calls `model`
    (a ScriptModule) with the values of `fixed` in place of the other arguments.

    TorchScript compiles from source, so the wrapper's source is written to a temporary
    file and scripted from there; its control flow and `model`'s are kept (tracing would
    bake in one path), then `torch.jit.freeze` folds the fixed values where it can.
    """
    import importlib.util
    import tempfile

    torch = import_torch()
    for kind, name in order:
        if not name.isidentifier():
            raise InputError(f"forward argument '{name}' is not a Python name")
        if kind == "const" and not isinstance(fixed[name], (bool, int, float, str)):
            raise InputError(f"argument '{name}' = {fixed[name]!r} cannot be fixed in a wrapper")
    params = ", ".join(f"{n}: torch.Tensor" for k, n in order if k == "tensor")
    call = ", ".join(n if k == "tensor" else repr(fixed[n]) for k, n in order)
    src = ("import torch\n\n\nclass FixedArguments(torch.nn.Module):\n"
           "    def __init__(self, inner):\n        super().__init__()\n        self.inner = inner\n\n"
           f"    def forward(self, {params}):\n        return self.inner({call})\n")
    name = "_edgeport_fixed_arguments"
    with tempfile.TemporaryDirectory(prefix="edgeport-fixed-") as tmp:
        path = os.path.join(tmp, name + ".py")
        with open(path, "w") as f:
            f.write(src)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
            wrapper = torch.jit.script(module.FixedArguments(model).eval())
        finally:
            sys.modules.pop(name, None)
    try:  # inline and fold the fixed values (`if sr == 16000:` keeps one branch)
        return torch.jit.freeze(wrapper)
    except Exception:
        return wrapper
