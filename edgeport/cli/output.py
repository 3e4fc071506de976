"""The one JSON contract of every command's --json.

Each command prints ONE object:
    {"command": "bench", "edgeport_version": "0.3.0", "exit_code": 0, ...body}
with the same key names for the same things in every command:
    model        a model's path (top level when the command is about one model, else in each
                 entry of `models`)
    models       one entry per model (bench, convert, validate, eval)
    size_bytes   a file's size
    *_ms         times, in milliseconds
NaN and infinity (not JSON) are written as null.
"""

import json
import math


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # numpy scalars
        try:
            x = x.item()
        except (TypeError, ValueError):
            return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def envelope(command, exit_code, **body):
    """The JSON object (a dict) of `command`: the envelope keys first, then `body`."""
    from edgeport import __version__

    reserved = {"command", "edgeport_version", "exit_code"} & set(body)
    if reserved:
        raise ValueError(f"body keys {sorted(reserved)} belong to the envelope")
    return _clean({"command": command, "edgeport_version": __version__, "exit_code": int(exit_code), **body})


def emit_json(command, exit_code, **body):
    """Print the JSON object of `command` on stdout; returns `exit_code` (for `return emit_json(...)`)."""
    print(json.dumps(envelope(command, exit_code, **body), indent=2, default=str, allow_nan=False))
    return exit_code
