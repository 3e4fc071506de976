"""The one JSON contract of every command's --json.

Each command prints ONE object:
    {"command": "bench", "edgeport_version": "0.1.0", "exit_code": 0, ...body}
with the same key names for the same things in every command:
    model        a model's path (top level when the command is about one model, else in each
                 entry of `models`)
    models       one entry per model (bench, convert, validate, eval)
    size_bytes   a file's size
    *_ms         times, in milliseconds
NaN and infinity (not JSON) are written as null.

Text output has one sanitizer, here: `escaping_streams()` wraps stdout and stderr for the
whole run of every command (the dispatcher installs it), so a string from outside edgeport
(file and tensor names, labels, manifest fields, --data keys, --device values, messages of
upstream tools with their ANSI colours) cannot reach the terminal raw. In every write, every
control character is escaped (edge.files.printable) except the newline that ends the write:
print() writes its text and then its end separately, so the only line breaks that pass are
edgeport's own. A block of several lines is printed with `say_lines`, one print per line.
JSON is printed line by line too; json.dumps escapes every control character itself, so the
document passes unchanged and stays one valid JSON document.
"""

import contextlib
import json
import math
import sys


class EscapingStream:
    """A text stream over `stream` that escapes control characters (see the module doc)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        from edge.files import printable

        text = str(text)
        if not text:
            return 0
        body, end = (text[:-1], "\n") if text.endswith("\n") else (text, "")
        self._stream.write(printable(body) + end)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):  # flush, isatty, fileno, encoding, buffer ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def escaping_streams():
    """stdout and stderr wrapped in EscapingStream for the duration (nested uses are no-ops)."""
    saved = sys.stdout, sys.stderr
    if not isinstance(sys.stdout, EscapingStream):
        sys.stdout = EscapingStream(sys.stdout)
    if not isinstance(sys.stderr, EscapingStream):
        sys.stderr = EscapingStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def say_lines(text_or_lines, file=None):
    """Print edgeport's own block of lines (a list, or a text whose newlines are edgeport's),
    one print per line, so the escaping stream keeps them as lines."""
    lines = text_or_lines.split("\n") if isinstance(text_or_lines, str) else text_or_lines
    for line in lines:
        print(line, file=file or sys.stdout)


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
    say_lines(json.dumps(envelope(command, exit_code, **body), indent=2, default=str, allow_nan=False))
    return exit_code
