"""The sidecar `NAME.edgeport.json` beside a model: how it expects its input, where it came from.

`converters/` writes it; `edge/` only reads it, so a device never guesses preprocessing.
A sidecar is read only when it is a regular file of at most 16 MB, and checked against the
schema below: a damaged one (bad JSON, a mean of "abc", 100,000 nested brackets, a route
that is a number) is named in one `warning:` line and ignored, as if there were none.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed import StrPath

SUFFIX = ".edgeport.json"


def sidecar_path(model_path: StrPath) -> Path:
    """'m.onnx' -> 'm.onnx.edgeport.json': the full name, so m.onnx and m.ort never share one."""
    p = Path(model_path)
    return p.with_name(p.name + SUFFIX)


_warned: set[tuple[str, str]] = set()


def _warn(path: StrPath, why: str) -> None:
    from .files import printable

    key = (os.path.abspath(path), why)
    if key not in _warned:
        _warned.add(key)
        print(f"warning: sidecar {printable(path)} ignored: {why}", file=sys.stderr)


def read_sidecar(model_path: StrPath,
                 warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The sidecar's content as a dict, or {} when there is none or it is damaged (warned)."""
    from .errors import InputError
    from .files import read_input

    if not os.fspath(model_path) or not Path(model_path).name:
        return {}  # no model name, no sidecar (the model's own reader says what is wrong)
    path = sidecar_path(model_path)
    warn = warn or (lambda why: _warn(path, why))
    if not os.path.lexists(path):
        return {}
    try:
        data = json.loads(read_input(path, "sidecar", "sidecar").decode("utf-8"))
    except InputError as e:
        warn(e.message)
        return {}
    except RecursionError:
        warn("nested too deeply")
        return {}
    except (ValueError, UnicodeDecodeError) as e:
        warn(f"not valid JSON ({str(e).splitlines()[0][:80]})")
        return {}
    problem = schema_problem(data)
    if problem:
        warn(problem)
        return {}
    return data


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _numbers(v: Any, positive: bool = False) -> bool:
    items = v if isinstance(v, list) else [v]
    return bool(items) and len(items) <= 4 and all(_finite(x) and (not positive or x > 0) for x in items)


def _preprocessing_problem(pre: object) -> str | None:
    if pre is None:
        return None
    if not isinstance(pre, dict):
        return "'preprocessing' is not an object"
    if "mean" in pre and pre["mean"] is not None and not _numbers(pre["mean"]):
        return "'preprocessing.mean' is not one finite number or a list of them"
    if "std" in pre and pre["std"] is not None and not _numbers(pre["std"], positive=True):
        return "'preprocessing.std' is not one positive finite number or a list of them"
    size = pre.get("size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and
                                 all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 1 << 16
                                     for x in size)):
        return "'preprocessing.size' is not [height, width]"
    if pre.get("layout") not in (None, "NHWC", "NCHW"):
        return "'preprocessing.layout' is neither NHWC nor NCHW"
    ch = pre.get("channels")
    if ch is not None and not (isinstance(ch, int) and not isinstance(ch, bool) and 0 < ch <= 4):
        return "'preprocessing.channels' is not 1..4"
    return None


_OBJECTS = ("source", "made_from", "options", "versions", "conversion", "validation")
_STRINGS = ("format", "created", "edgeport", "artefact_sha256")


def schema_problem(data: object) -> str | None:
    """What is wrong with a sidecar's parsed JSON, or None when it fits the schema."""
    if not isinstance(data, dict):
        return "not a JSON object"
    problem = _preprocessing_problem(data.get("preprocessing"))
    if problem:
        return problem
    for key in _OBJECTS:
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"'{key}' is not an object"
    for key in _STRINGS:
        if data.get(key) is not None and not isinstance(data[key], str):
            return f"'{key}' is not a string"
    route = data.get("route")
    if route is not None and not (isinstance(route, list) and all(isinstance(x, str) for x in route)):
        return "'route' is not a list of format names"
    labels = data.get("labels")
    if labels is not None and not (
            (isinstance(labels, list) and all(isinstance(x, str) for x in labels)) or
            (isinstance(labels, dict) and all(isinstance(x, str) for x in labels.values()))):
        return "'labels' is not a list of names"
    src = data.get("source")
    if isinstance(src, dict) and src.get("sha256") is not None and not isinstance(src["sha256"], str):
        return "'source.sha256' is not a string"
    if data.get("output_rescale") is not None:
        from .tensors import rescale_problem

        problem = rescale_problem(data["output_rescale"])
        if problem:
            return problem
    names = data.get("input_names")
    if names is not None and not (isinstance(names, dict) and isinstance(names.get("names"), dict)
                                  and all(isinstance(k, str) and isinstance(v, str)
                                          for k, v in names["names"].items())):
        return "'input_names' is not a map of tensor names"
    opset = data.get("opset")
    if opset is not None and not (isinstance(opset, int) and not isinstance(opset, bool)):
        return "'opset' is not a number"
    return None
