"""The options contract: typed fields, no catch-all dict, no getattr guesses on options or args.

Each command family has one options dataclass (converters.options.ConvertOptions,
converters.validation.validate.ValidateOptions), both extending ModelLoading; the shared
argument groups of edgeport/cli/args.py always set every attribute of their group, so code
reads `options.x` / `args.x`. A scan of the sources keeps fallbacks from coming back.
"""
import ast
import dataclasses
import typing

import pytest

from converters.options import ConvertOptions, ModelLoading
from converters.validation.validate import ValidateOptions
from tests.conftest import REPO

OPTIONS_CLASSES = (ModelLoading, ConvertOptions, ValidateOptions)
# the names options and parsed arguments go by in this code base
OPTION_NAMES = {"args", "options", "opts", "namespace", "vo", "ns"}


def fallbacks(source, filename="<source>"):
    """[(line, text)] of each guess on an options/args object in `source`: getattr with a
    default or a literal name, hasattr, vars(x).get, and `.extra` (the old catch-all dict)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            target = node.args[0]
            if not (isinstance(target, ast.Name) and target.id in OPTION_NAMES):
                continue
            name = node.func.id
            literal = len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
            if (name == "getattr" and (len(node.args) > 2 or literal)) or name == "hasattr":
                found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "get" and isinstance(node.func.value, ast.Call)
              and isinstance(node.func.value.func, ast.Name) and node.func.value.func.id == "vars"
              and node.func.value.args and isinstance(node.func.value.args[0], ast.Name)
              and node.func.value.args[0].id in OPTION_NAMES):
            found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Attribute) and node.attr == "extra"
              and isinstance(node.value, ast.Name) and node.value.id in OPTION_NAMES):
            found.append((node.lineno, ast.unparse(node)))
    return found


@pytest.mark.parametrize("code", [
    'x = getattr(options, "torch_model", None)',
    'x = getattr(args, "json", False)',
    'x = getattr(opts, "input_overrides")',
    "x = getattr(options, name, None)",
    'x = hasattr(args, "size")',
    'x = vars(args).get("model")',
    'x = options.extra.get("provenance")',
    'options.extra["adaround"] = False',
])
def test_the_scan_finds_each_kind_of_fallback(code):
    assert len(fallbacks(code)) == 1, code


@pytest.mark.parametrize("code", [
    "x = options.torch_model",
    "x = getattr(options, f.name)",            # a loop over the dataclass's own fields
    'x = getattr(module, "validate_pair", None)',   # a module, genuinely dynamic
    'x = getattr(action.type, "rule", None)',
])
def test_the_scan_leaves_typed_reads_alone(code):
    assert fallbacks(code) == []


def test_no_options_fallback_in_the_sources():
    bad = []
    for top in ("converters", "edgeport", "edge"):
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO)
            bad += [f"{rel}:{line}: {text}" for line, text in fallbacks(path.read_text(), str(rel))]
    assert bad == []


def _annotation(cls, f):
    hints = typing.get_type_hints(cls, localns={"InputOverrides": object, "Tolerances": object})
    return f.type if isinstance(f.type, str) else str(hints[f.name])


@pytest.mark.parametrize("cls", OPTIONS_CLASSES, ids=lambda c: c.__name__)
def test_every_options_field_is_typed(cls):
    """A real type on every field (not `object` or `Any`), None allowed only where the type
    says so, and no catch-all `extra` dict."""
    bad = []
    for f in dataclasses.fields(cls):
        text = _annotation(cls, f)
        if f.name == "extra":
            bad.append(f"{f.name}: a catch-all dict")
        if text.replace("typing.", "") in ("object", "Any", "<class 'object'>", ""):
            bad.append(f"{f.name}: {text}")
        if f.default is None and "None" not in text and "Optional" not in text:
            bad.append(f"{f.name}: {text} but defaults to None")
    assert bad == []


def test_convert_and_validate_share_the_model_loading_fields():
    loading = {f.name for f in dataclasses.fields(ModelLoading)}
    assert loading <= {f.name for f in dataclasses.fields(ConvertOptions)}
    assert loading <= {f.name for f in dataclasses.fields(ValidateOptions)}
    o = ConvertOptions(torch_model="m:f", trust_pickle=True, input_shape=(1, 3, 8, 8))
    assert o.loading() == ModelLoading(torch_model="m:f", trust_pickle=True, input_shape=(1, 3, 8, 8))


def test_model_loading_is_built_from_the_shared_groups():
    """Every command that loads models gets ModelLoading from the same function, whichever
    of the group's flags it offers (a flag left out keeps its default)."""
    from edgeport.cli.args import Parser, add_input_shape, add_model_loading, model_loading
    from edgeport.cli.inputs import add_input_args

    p = Parser()
    add_model_loading(p, torch_model=False)
    add_input_shape(p)
    add_input_args(p)
    got = model_loading(p.parse_args(["--trust-pickle", "--input-shapes", "[1,3,8,8]", "--arg", "sr=16000"]))
    assert isinstance(got, ModelLoading)
    assert got.torch_model is None and got.trust_pickle and not got.keras_unsafe
    assert got.input_shape == (1, 3, 8, 8)
    assert got.input_overrides.args == {"sr": "16000"}
    assert model_loading(p.parse_args([]), overrides=True).input_overrides is None


def test_every_conversion_needs_only_convert_options_fields():
    """A route's `needs` are read as ConvertOptions attributes (registry.Conversion.missing):
    each one is a field, so no misspelt need is silently never met."""
    from converters.registry import conversions

    names = {f.name for f in dataclasses.fields(ConvertOptions)}
    bad = [f"{c.name}: {n}" for c in conversions() for need in c.needs
           for n in ((need,) if isinstance(need, str) else need) if n not in names]
    assert bad == []
