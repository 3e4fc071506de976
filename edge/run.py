"""A run context: every command declares its inputs and outputs in one place, checked once.

Each command module of edgeport/cli/ defines `files(args, run)`, which declares on a `Run`
every file the command reads (models and their sidecars, labels, data, images, manifests,
every source of a folder) and every file it writes (`run.output(path)`, or a whole folder
of outputs with `run.tree(folder)`). `Run.check()` runs before any work and refuses, with
one line (InputError, exit 2):

  - an output that is an input of the run by name, by symbolic link, or by hard link (the
    same device and inode);
  - an output that is a special file (FIFO, device, socket), a folder, or a symbolic link;
  - an output inside an input that is a package folder (a .mlpackage, a SavedModel);
  - two outputs that are one file.

While the run is active (`with run.active():`) every atomic writer asks `guard_write(path)`
before it writes: a path that was not declared, or that is an input, is refused, so a flag
added later cannot write anywhere its command did not say. Temps live beside their declared
output (atomic writers) and are removed on any exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
from typing import TYPE_CHECKING

from .errors import InputError
from .files import _display, check_path_text, kind_of

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from types import FrameType

    from _typeshed import StrPath

# Folders that are one model: nothing may be written inside them.
PACKAGE_SUFFIXES = (".mlpackage", ".mlmodelc")
_MAX_FOLDER_FILES = 100_000   # files of an input folder remembered (images, models)
_current: Run | None = None


def _ident(path: StrPath) -> tuple[int, int] | None:
    """(st_dev, st_ino) of what `path` resolves to, or None."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _real(path: StrPath) -> str:
    try:
        return os.path.realpath(os.path.abspath(path))
    except (OSError, ValueError):
        return os.path.abspath(path)


def _text(path: StrPath, what: str) -> str:
    """The path as text: not empty, no NUL, and valid UTF-8 (a name with undecodable bytes is
    refused with one line: the frameworks edgeport hands paths to cannot open it)."""
    p = check_path_text(path, what)
    try:
        p.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"the {what} {_display(p)} is not valid UTF-8",
                         "rename it to a UTF-8 name (edgeport's frameworks cannot open it)") from None
    return p


def _is_package(path: StrPath) -> bool:
    p = os.fspath(path).rstrip("/" + os.sep)
    return p.endswith(PACKAGE_SUFFIXES) or os.path.exists(os.path.join(p, "saved_model.pb"))


class Run:
    """The declared inputs and outputs of one command (see the module docstring)."""

    def __init__(self, command: str = "edgeport") -> None:
        self.command = command
        self.inputs: list[tuple[str, str, str]] = []  # (real path, what, given path) of every input file
        self.idents: dict[tuple[int, int], tuple[str, str]] = {}  # (dev, ino) -> what
        self.packages: list[tuple[str, str]] = []  # (real path, what) of input folders nothing may be written into
        self.outputs: list[tuple[StrPath, str, bool]] = []  # (path, what, folder_ok)
        self.trees: list[tuple[str, str]] = []  # (real path, what): folders any file under which may be written
        # output path -> the bytes a file of its kind starts with
        self.kinds: dict[StrPath, bytes | tuple[bytes, ...]] = {}
        self.checked = False

    # -- declaring ---------------------------------------------------------------------------
    def input(self, path: StrPath | None, what: str = "input", sidecar: bool = False) -> None:
        """Declare an input file or folder (None: nothing given). A folder declares every file
        under it; a package folder (.mlpackage, SavedModel) also forbids writes inside it.
        `sidecar` also declares the model's NAME.edgeport.json."""
        if path is None:
            return
        p = check_path_text(path, f"{what} path")  # "" is refused, never taken as "not given"
        try:
            mode = os.stat(p).st_mode
        except FileNotFoundError:  # given but missing: refused even when this run would not read it
            if os.path.islink(p):
                raise InputError(f"{what} {_display(p)} is a symbolic link to nothing") from None
            raise InputError(f"cannot read {what} {_display(p)}: it does not exist") from None
        except OSError as e:
            raise InputError(f"cannot read {what} {_display(p)}: {e.strerror}") from None
        _text(p, f"{what} path")
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InputError(f"the {what} {_display(p)} is {kind_of(mode)}, not a regular file",
                             "pass a file")  # a FIFO would hang the read, a device never end
        if os.path.isdir(p):
            if _is_package(p):
                self.packages.append((_real(p), what))
            self._folder(p, what)
        else:
            self._file(p, what)
        if sidecar:
            from .sidecar import sidecar_path

            self._file(str(sidecar_path(p.rstrip("/" + os.sep))), f"sidecar of the {what}")

    def inputs_of(self, paths: Iterable[StrPath] | None, what: str = "input",
                  sidecar: bool = False) -> None:
        for p in paths or ():
            self.input(p, what, sidecar)

    def _file(self, p: str, what: str) -> None:
        self.inputs.append((_real(p), what, p))
        ident = _ident(p)
        if ident:
            self.idents.setdefault(ident, (what, p))

    def _folder(self, folder: str, what: str) -> None:
        n = 0
        for root, dirs, names in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                n += 1
                if n > _MAX_FOLDER_FILES:
                    return
                self._file(os.path.join(root, name), what)

    def output(self, path: StrPath | None, what: str = "output", folder: bool = False,
               looks_like: bytes | tuple[bytes, ...] | None = None) -> None:
        """Declare one output file (`folder`: a .mlpackage-like folder output). `looks_like`:
        the first bytes every file of this kind starts with (b"{" for JSON, b"\\x89PNG" ...):
        an existing file that does not is not one this command wrote, and is not replaced
        (`manifest merge -o model.tflite` keeps the model)."""
        if path is None:
            return
        self.outputs.append((path, what, folder))
        if looks_like is not None:
            self.kinds[path] = looks_like

    def tree(self, folder: StrPath | None, what: str = "output folder") -> None:
        """Declare a folder edgeport writes into (convert's artefacts, sidecars, state file)."""
        if folder is None:
            return
        p = _text(folder, what)
        self.trees.append((_real(p), what))

    # -- checking ----------------------------------------------------------------------------
    def check(self) -> Run:
        """InputError (one line) for the first declared output that must not be written."""
        for real, what in self.trees:  # folders first: "-o X is a file" says more than its files would
            if os.path.exists(real) and not os.path.isdir(real):
                raise InputError(f"the {what} {_display(real)} is a file, not a folder",
                                 "give a folder (it is made when missing)")
        seen: dict[str, str] = {}
        for path, what, folder in self.outputs:
            p = self._check_one(path, what, folder)
            key = _real(p)
            if key in seen:
                raise InputError(f"the {what} {_display(p)} is also the {seen[key]}: one file cannot be both",
                                 "give each output its own name")
            seen[key] = what
        for real, what in self.trees:
            self._refuse_inside_package(real, what, real)
        self.checked = True
        return self

    def _check_one(self, path: StrPath, what: str, folder: bool = False) -> str:
        p = _text(path, f"{what} path")
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            st = None
        except NotADirectoryError:
            raise InputError(f"cannot write the {what} {_display(p)}: a parent is not a folder") from None
        except OSError as e:
            raise InputError(f"cannot write the {what} {_display(p)}: {e.strerror}") from None
        if st is not None and not (stat.S_ISREG(st.st_mode) or (folder and stat.S_ISDIR(st.st_mode))):
            raise InputError(f"the {what} {_display(p)} exists and is {kind_of(st.st_mode)}: edgeport "
                             "only replaces regular files", "choose another path, or remove it first")
        self._refuse_input(p, what)
        magic = self.kinds.get(path)
        if st is not None and magic is not None and st.st_size > 0:
            try:
                with open(p, "rb") as f:
                    head = f.read(64).lstrip()
            except OSError as e:
                raise InputError(f"cannot write the {what} {_display(p)}: {e.strerror}") from None
            if not any(head.startswith(m) for m in (magic if isinstance(magic, tuple) else (magic,))):
                raise InputError(f"the {what} {_display(p)} exists and is not a {what} edgeport wrote: "
                                 "it is not replaced", "choose another name, or remove it first")
        return p

    def _refuse_input(self, p: str, what: str) -> None:
        real = _real(p)
        for r, in_what, given in self.inputs:
            if r == real:
                raise InputError(f"the {what} {_display(p)} is the {in_what} {_display(given)}: "
                                 "edgeport never writes over an input of the run", "choose another path")
        ident = _ident(p)
        if ident and ident in self.idents:
            in_what, given = self.idents[ident]
            raise InputError(f"the {what} {_display(p)} is the {in_what} {_display(given)} "
                             "(the same file through a link): edgeport never writes over an input "
                             "of the run", "choose another path")
        self._refuse_inside_package(real, what, p)

    def _refuse_inside_package(self, real: str, what: str, shown: str) -> None:
        for pkg, in_what in self.packages:
            if real == pkg or real.startswith(pkg.rstrip(os.sep) + os.sep):
                raise InputError(f"the {what} {_display(shown)} is inside the {in_what} package "
                                 f"{_display(pkg)}: edgeport never writes into a source package",
                                 "choose another path")

    def declared(self, path: StrPath) -> bool:
        real = _real(path)
        if any(_real(p) == real for p, _, _ in self.outputs):
            return True
        return any(real == t or real.startswith(t.rstrip(os.sep) + os.sep) for t, _ in self.trees)

    def guard_write(self, path: StrPath, what: str = "output") -> None:
        """Called by every writer before it writes `path`: InputError unless it was declared
        and is no input of the run."""
        p = check_path_text(path, f"{what} path")
        if not self.declared(p):
            raise InputError(f"{self.command} did not declare the {what} {_display(p)} it was about to "
                             "write; nothing was written there",
                             "this is a bug in edgeport: please report it")
        self._refuse_input(p, what)

    @contextlib.contextmanager
    def active(self) -> Iterator[Run]:
        """Make this run the one writers consult (guard_write) while inside; SIGTERM is
        handled like Ctrl-C meanwhile (temps removed, locks released, exit 143)."""
        global _current
        if not self.checked:
            self.check()
        old, _current = _current, self
        try:
            with terminate_as_interrupt():
                yield self
        finally:
            _current = old


def current() -> Run | None:
    """The active Run, or None (library use outside a command: nothing declared to check)."""
    return _current


def guard_write(path: StrPath, what: str = "output") -> None:
    """The active run's guard_write(path), or nothing when no run is active."""
    if _current is not None:
        _current.guard_write(path, what)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: temps removed, locks released; the CLI exits 143."""

    exit_code = 143


# SIGTERM arrived inside the outermost terminate_as_interrupt (reset when it is entered).
_sigterm = {"depth": 0, "received": False}


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread, so the
    same cleanup as for Ctrl-C runs (atomic temps deleted, locks released). Elsewhere: no-op.

    The signal can land anywhere, including in code that turns the exception into another one
    (a C extension's module initialisation re-raises it as ImportError("initialization
    failed"), a converter wraps what it caught into a ConversionError, `require` turns an
    ImportError into "missing optional dependency") or swallows it. So the handler also records
    that SIGTERM came, and leaving this block re-raises Terminated whatever happened after it:
    a terminated run always ends as one (exit 143), never as an error or a success."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        _sigterm["received"] = True
        raise Terminated("terminated (SIGTERM)")

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):
        yield
        return
    if _sigterm["depth"] == 0:
        _sigterm["received"] = False
    _sigterm["depth"] += 1
    try:
        yield
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        if _sigterm["received"]:
            raise Terminated("terminated (SIGTERM)") from e
        raise
    else:
        if _sigterm["received"]:  # swallowed on the way: the run still ends as terminated
            raise Terminated("terminated (SIGTERM)")
    finally:
        _sigterm["depth"] -= 1
        signal.signal(signal.SIGTERM, old)
