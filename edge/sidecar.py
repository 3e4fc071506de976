"""The sidecar `NAME.edgeport.json` beside a model: how it expects its input, where it came from.

`converters/` writes it; `edge/` only reads it, so a device never guesses preprocessing.
"""

import json
from pathlib import Path

SUFFIX = ".edgeport.json"


def sidecar_path(model_path):
    """'m.onnx' -> 'm.onnx.edgeport.json': the full name, so m.onnx and m.ort never share one."""
    p = Path(model_path)
    return p.with_name(p.name + SUFFIX)


def read_sidecar(model_path):
    """The sidecar's content as a dict, or {} when there is none or it is unreadable."""
    path = sidecar_path(model_path)
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
