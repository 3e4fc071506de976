"""The one JSON contract of every command's --json.

Each command prints ONE object:
    {"command": "bench", "edgeport_version": "0.4.0", "exit_code": 0, ...body}
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


# -- exactly one document on stdout, whatever happens (used by the dispatcher, cli/__init__.py) --
class _Captured:
    text = ""


class captured_stdout:
    """Within the block, whatever is written to stdout (by Python, and by child processes or C
    code writing to file descriptor 1) is kept aside; `.text` holds it afterwards."""

    def __enter__(self):
        import contextlib
        import io
        import sys
        import tempfile

        self.result = _Captured()
        self._buffer = io.StringIO()
        self._redirect = contextlib.redirect_stdout(self._buffer)
        self._fd_saved = self._file = None
        try:
            real = sys.stdout.fileno() == 1
        except (AttributeError, OSError, ValueError):  # pytest's capture, a StringIO...
            real = False
        if real:
            import os

            sys.stdout.flush()
            self._file = tempfile.TemporaryFile()
            self._fd_saved = os.dup(1)
            os.dup2(self._file.fileno(), 1)
        self._redirect.__enter__()
        return self.result

    def __exit__(self, *exc):
        import os
        import sys

        self._redirect.__exit__(*exc)
        text = self._buffer.getvalue()
        if self._fd_saved is not None:
            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
            os.dup2(self._fd_saved, 1)
            os.close(self._fd_saved)
            self._file.seek(0)
            text = self._file.read().decode("utf-8", "replace") + text
            self._file.close()
        self.result.text = text
        return False


def _documents(text):
    """(JSON objects, leftover text) found in captured stdout."""
    decoder = json.JSONDecoder()
    docs, rest, i = [], [], 0
    while i < len(text):
        start = text.find("{", i)
        if start < 0:
            rest.append(text[i:])
            break
        try:
            doc, end = decoder.raw_decode(text, start)
        except ValueError:
            rest.append(text[i:start + 1])
            i = start + 1
            continue
        if isinstance(doc, dict) and "command" in doc and "exit_code" in doc:
            docs.append(doc)
            rest.append(text[i:start])
        else:
            rest.append(text[i:end])
        i = end
    return docs, "".join(rest).strip()


def one_document(command, exit_code, captured, failure=None, models=()):
    """The text to print on stdout for a --json run: exactly one JSON document.

    `captured` is what the command printed on stdout. Its one envelope is kept (exit_code made
    equal to the process exit status); text around it goes to stderr. When the command printed
    no envelope (it failed before it could, or crashed), an envelope carries `failure` (the
    one-line reason) and the models it was given. Several envelopes are joined under `documents`.
    """
    import sys

    docs, rest = _documents(captured)
    if rest:
        print(rest, file=sys.stderr)
    if len(docs) == 1:
        doc = docs[0]
        doc["exit_code"] = int(exit_code)
        if failure and exit_code and "error" not in doc:
            doc["error"] = failure
        return json.dumps(doc, indent=2, default=str, allow_nan=False) + "\n"
    body = {}
    if docs:
        body["documents"] = docs
    if failure or (exit_code and not docs):
        body["error"] = failure or f"failed with exit status {exit_code}"
    models = [m for m in models if m]
    if len(models) == 1:
        body["model"] = models[0]
    if models:
        body["models"] = [{"model": m, "status": "failed" if exit_code else "ok", "exit_code": int(exit_code),
                           **({"error": body["error"]} if "error" in body else {})} for m in models]
    return json.dumps(envelope(command, exit_code, **body), indent=2, default=str, allow_nan=False) + "\n"
