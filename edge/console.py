"""What reaches the terminal: edgeport's own lines, not the frameworks' chatter.

TensorFlow, ONNX Runtime, LiteRT, coremltools and PyTorch print banners, deprecation
warnings and INFO lines on every run, some from C++ straight to file descriptor 2, where no
Python setting reaches them. A command therefore runs inside `quiet()`:

- file descriptor 2 points at an unnamed temporary file (the capture) for the whole command,
  so whatever native code or a child process writes there is kept, not shown;
- `sys.stderr` becomes a router: a write made by edgeport's own code (the packages `edge`,
  `converters`, `edgeport`, and argparse's usage errors) goes to the real terminal, any other
  module's write goes to the capture; `warnings` are routed by the file that raised them;
- when the command fails, the capture's lines that name an error are shown (escaped), with a
  count of what stayed hidden, so a tool's own error is never lost.

`--verbose` (or EDGEPORT_VERBOSE=1) turns all of this off. Long steps show progress through
`progress()`: a line updated in place on a terminal (tqdm), plain lines at most every few
seconds elsewhere (CI logs, pipes, --json).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
import warnings
from typing import TYPE_CHECKING, Any, TextIO

from .files import printable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Literal

OWN_PACKAGES = ("edge", "converters", "edgeport", "argparse", "__main__", "scripts")
# A captured line that names a failure: log lines of level E/F (absl, glog), Python's
# exceptions and tracebacks, and the words tools use for a crash. ("round-off errors" in
# oneDNN's banner is not one.)
ERROR_LINE = re.compile(r"(^[EF]\d{4} |\bERROR\b|\b[Ee]rror:|\b\w*Error\b|^Traceback|\bFATAL\b|"
                        r"\bFatal\b|[Ss]egmentation fault|\bAborted\b|\bfailed\b)")
SHOWN_ERROR_LINES = 12
PLAIN_EVERY_SECONDS = 5.0

_terminal: TextIO | None = None   # the stream edgeport's own lines go to while a quiet session runs
_plain = False     # plain lines even on a terminal (--json: a tool reads the output)


def set_plain(plain: object) -> None:
    """Progress as plain lines even on a terminal (commands with --json set this)."""
    global _plain
    _plain = bool(plain)


def shows_progress(say: Callable[..., Any] | None) -> bool:
    """Whether a progress callable (e.g. ConvertOptions.progress) is one that prints: None and
    the bound method of options with `quiet` set do not."""
    if say is None:
        return False
    return not getattr(getattr(say, "__self__", None), "quiet", False)


def _tty(out: object) -> bool:
    return not _plain and bool(getattr(out, "isatty", lambda: False)())


def terminal() -> TextIO:
    """The stream for edgeport's own messages: the real stderr, also inside `quiet()`."""
    return _terminal if _terminal is not None else sys.stderr


def _own(module_name: str | None) -> bool:
    top = (module_name or "").split(".", 1)[0]
    return top in OWN_PACKAGES


_OWN_DIRS = tuple(os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep + p + os.sep
                  for p in ("edge", "converters", "edgeport", "scripts"))


class _Router:
    """A stand-in for sys.stderr that sends each write by who made it."""

    def __init__(self, term: TextIO, capture_fd: int) -> None:
        self._term = term
        self._fd = capture_fd
        self._retired = False
        self.encoding = getattr(term, "encoding", None) or "utf-8"
        self.errors = "backslashreplace"

    def _caller_is_own(self) -> bool:
        try:
            frame = sys._getframe(2)
        except ValueError:
            return True
        return _own(frame.f_globals.get("__name__")) or \
            os.path.abspath(frame.f_code.co_filename).startswith(_OWN_DIRS)   # scripts/ imported by name

    def write(self, text: str) -> int:
        if self._retired:   # a framework kept this stream past the session: the plain stderr
            out = sys.stderr if sys.stderr is not self else sys.__stderr__
            return out.write(text) if out is not None else len(text)
        if self._caller_is_own():
            return self._term.write(text)
        os.write(self._fd, str(text).encode("utf-8", "backslashreplace"))
        return len(text)

    def retire(self) -> None:
        """The session ended (its capture and terminal handle are closed)."""
        self._retired = True

    def flush(self) -> None:
        if self._retired:
            return
        with contextlib.suppress(Exception):
            self._term.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._term, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self._term.fileno()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        """A framework's log handler may close the stream it was given at exit: the router
        itself holds nothing to close (the terminal is closed by quiet())."""

    @property
    def closed(self) -> bool:
        return False


def _verbose_env() -> bool:
    return os.environ.get("EDGEPORT_VERBOSE", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def quiet(verbose: bool = False,
          failed: Callable[[], bool] = lambda: False) -> Iterator[Callable[[], list[str]]]:
    """Run a command with the frameworks' output captured (see the module docstring).

    `failed()` is asked at the end: when true, the error lines of the capture are shown.
    Yields the capture's path-less reader `hidden()` -> list of captured lines.
    """
    global _terminal
    if verbose or _verbose_env() or _terminal is not None:
        yield lambda: []
        return
    sys.stdout.flush()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    capture = tempfile.TemporaryFile()
    saved_fd = os.dup(2)
    old_stderr, old_showwarning = sys.stderr, warnings.showwarning
    # A stream on fd 2 (a real program) must keep a handle on the real terminal; a Python
    # object (pytest's capsys, an IDE) is not affected by moving fd 2.
    try:
        fd_backed = old_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        fd_backed = False
    term = (open(saved_fd, "w", buffering=1, encoding=getattr(old_stderr, "encoding", None) or "utf-8",
                 errors="backslashreplace", closefd=False) if fd_backed else old_stderr)
    os.dup2(capture.fileno(), 2)
    router = _Router(term, capture.fileno())

    def showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: TextIO | None = None, line: str | None = None) -> None:
        text = warnings.formatwarning(message, category, filename, lineno, line)
        if os.path.abspath(filename or "").startswith(_OWN_DIRS):
            term.write(text)
        else:
            os.write(capture.fileno(), text.encode("utf-8", "backslashreplace"))

    def hidden() -> list[str]:
        sys.stdout.flush()
        capture.flush()
        capture.seek(0)
        lines = capture.read().decode("utf-8", "replace").splitlines()
        capture.seek(0, os.SEEK_END)
        return lines

    sys.stderr, warnings.showwarning, _terminal = router, showwarning, term
    try:
        yield hidden
    finally:
        sys.stdout.flush()
        with contextlib.suppress(Exception):
            term.flush()
        os.dup2(saved_fd, 2)
        sys.stderr, warnings.showwarning, _terminal = old_stderr, old_showwarning, None
        router.retire()
        try:
            if failed():
                _show_errors(hidden(), old_stderr)
        finally:
            if term is not old_stderr:
                with contextlib.suppress(Exception):
                    term.close()
            os.close(saved_fd)
            capture.close()


def _show_errors(lines: list[str], out: TextIO) -> None:
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        return
    errors = [ln for ln in lines if ERROR_LINE.search(ln)][-SHOWN_ERROR_LINES:]
    if not errors:   # nothing the tools said names a failure: edgeport's own line stands alone
        return
    for ln in errors:
        print(f"  tool: {printable(ln.rstrip())}", file=out)
    print(f"({len(lines) - len(errors)} more lines of the tools' own output hidden; "
          "--verbose shows them)", file=out)


class progress:
    """Progress of a long step with a known count: `with progress(n, "calibrating") as p: p.step()`.

    On a terminal a line updated in place with count, rate and ETA (tqdm); elsewhere a plain
    line at most every PLAIN_EVERY_SECONDS and one at the end. `enabled=False` prints nothing.
    """

    def __init__(self, total: int | None, what: object, unit: str = "step", enabled: bool = True) -> None:
        self.total, self.what, self.unit, self.enabled = total, printable(what), unit, enabled
        self.n = 0
        self._bar = None
        self._t0 = self._last = time.monotonic()

    def __enter__(self) -> progress:
        if not self.enabled:
            return self
        out = terminal()
        if _tty(out):
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                # A terminal that reports no size (0x0, e.g. a bare pty) would get no bar at
                # all from tqdm (it draws no row past nrows): assume 80x24 there.
                try:
                    cols, rows = os.get_terminal_size(out.fileno())
                except (AttributeError, OSError, ValueError):
                    cols = rows = 0
                sized = {} if cols and rows else {"ncols": 80, "nrows": 24}
                self._bar = tqdm(total=self.total, desc=self.what, unit=self.unit, file=out,
                                 leave=False, disable=False, **sized)
        return self

    def step(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= PLAIN_EVERY_SECONDS and self.n < (self.total or 0):
            self._last = now
            print(self._plain(now), file=terminal(), flush=True)

    def _plain(self, now: float) -> str:
        elapsed = now - self._t0
        if self.total and self.n:
            eta = elapsed / self.n * (self.total - self.n)
            return f"{self.what}: {self.n}/{self.total} {self.unit}s, {elapsed:.0f} s, about {eta:.0f} s left"
        return f"{self.what}: {self.n} {self.unit}s, {elapsed:.0f} s"

    def __exit__(self, *exc: object) -> Literal[False]:
        if self._bar is not None:
            self._bar.close()
        return False


@contextlib.contextmanager
def ticking(what: object, every: float = PLAIN_EVERY_SECONDS, enabled: bool = True) -> Iterator[None]:
    """A long step with no count (a subprocess such as onnx2tf): the elapsed time, in place on
    a terminal, as a plain line every `every` seconds elsewhere."""
    import threading

    if not enabled:
        yield
        return
    out, stop = terminal(), threading.Event()
    tty = _tty(out)
    t0 = time.monotonic()
    what = printable(what)

    def tick() -> None:
        while not stop.wait(0.5 if tty else every):
            line = f"{what}: {time.monotonic() - t0:.0f} s"
            with contextlib.suppress(Exception):
                out.write(f"\r{line}\x1b[K" if tty else line + "\n")
                out.flush()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if tty:
            with contextlib.suppress(Exception):
                out.write("\r\x1b[K")
                out.flush()
