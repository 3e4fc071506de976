"""File safety shared by every reader and writer: regular files only, sizes checked first.

Inputs (models, images, labels, sidecars) must be regular files (a symbolic link to one is
followed) of a bounded size: a FIFO would hang a read, /dev/zero would never end, a sparse
40 GB file would exhaust memory. They are opened non-blocking and checked with fstat on the
open descriptor, so a file swapped between the check and the read is caught too.

Outputs (models, sidecars, reports, plots, saved outputs) must be a regular file or not
exist: a device node, FIFO, socket or symbolic link under an output name is refused, never
replaced and never written through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import TYPE_CHECKING

from .errors import EdgeportError, InputError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import BinaryIO

    from _typeshed import StrOrBytesPath

MB = 1 << 20
GB = 1 << 30
# Upper bounds of what edgeport reads into memory (override: EDGEPORT_MAX_<KIND>_BYTES).
LIMITS = {
    "model": 4 * GB,        # a TFLite flatbuffer cannot address more; ONNX protobufs cap at 2 GB
    "image": 256 * MB,
    "labels": 16 * MB,
    "sidecar": 16 * MB,
    "json": 64 * MB,
    "manifest": 1 * MB,
    "tensor": 4 * GB,       # one tensor of a model: shape x element size
    "arrays": 1 * GB,       # arrays read back (--data, saved outputs): the total inflated
}
# What an EDGEPORT_MAX_<KIND>_BYTES override may say: an integer from 1 byte to 1 TB.
LIMIT_RANGE = (1, 1 << 40)


def limit_of(kind: str) -> int:
    """The byte limit of `kind`: LIMITS, or EDGEPORT_MAX_<KIND>_BYTES when set (an integer in
    LIMIT_RANGE; anything else is one InputError line, never a silent default)."""
    name = f"EDGEPORT_MAX_{kind.upper()}_BYTES"
    env = os.environ.get(name)
    if env is None or env == "":
        return LIMITS[kind]
    text = env.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 16 \
            or not LIMIT_RANGE[0] <= int(text) <= LIMIT_RANGE[1]:
        raise InputError(f"{name}={printable(env)[:40]!s} is not an integer from {LIMIT_RANGE[0]} "
                         f"to {LIMIT_RANGE[1]} (1 TB)", "unset it or give a byte count")
    return int(text)


def human_bytes(n: float) -> str:
    n = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def kind_of(mode: int) -> str:
    """'a FIFO', 'a character device', ... for a st_mode that is not a regular file."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _display(path: StrOrBytesPath) -> str:
    """A path safe to print: undecodable bytes and control characters escaped."""
    return printable(os.fsdecode(path) if isinstance(path, bytes) else str(path))


def printable(text: object) -> str:
    """`text` with control characters (terminal escapes, NUL) and lone surrogates escaped."""
    out = []
    for ch in str(text):
        o = ord(ch)
        if o < 32 or 0x7F <= o < 0xA0 or 0xD800 <= o < 0xE000:
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def check_path_text(path: StrOrBytesPath, what: str = "path") -> str:
    """InputError for an empty path or one with a NUL byte (the OS cannot name those)."""
    p = os.fspath(path)
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    if not p:
        what = what if what.endswith(("path", "folder")) else f"{what} path"
        raise InputError(f"the {what} is empty", "pass a file name")
    if "\0" in p:
        raise InputError(f"the {what} {_display(p)} contains a NUL byte")
    return p


def check_input(path: StrOrBytesPath, what: str = "file", kind: str = "model",
                allow_dir: bool = False) -> os.stat_result:
    """stat of an input that must be a regular file no larger than kind's limit (InputError)."""
    p = check_path_text(path, what)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise InputError(f"{what} {_display(p)} is a symbolic link to nothing") from None
        raise InputError(f"cannot read {what} {_display(p)}: it does not exist") from None
    except OSError as e:
        raise InputError(f"cannot read {what} {_display(p)}: {e.strerror}") from None
    return _check_stat(st, p, what, kind, allow_dir)


def _check_stat(st: os.stat_result, p: str, what: str, kind: str,
                allow_dir: bool = False) -> os.stat_result:
    if stat.S_ISDIR(st.st_mode) and allow_dir:
        return st
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {_display(p)} is {kind_of(st.st_mode)}, not a regular file",
                         "pass a file")
    limit = limit_of(kind)
    if st.st_size > limit:
        raise InputError(f"{what} {_display(p)} is {human_bytes(st.st_size)}, more than the "
                         f"{human_bytes(limit)} edgeport reads for a {kind}",
                         f"is it the right file? EDGEPORT_MAX_{kind.upper()}_BYTES raises the limit")
    return st


@contextlib.contextmanager
def open_input(path: StrOrBytesPath, what: str = "file", kind: str = "model") -> Iterator[BinaryIO]:
    """A binary file object for a checked regular input (never blocks on a FIFO)."""
    p = check_path_text(path, what)
    check_input(p, what, kind)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise InputError(f"{what} {_display(p)} is a folder, not a file", "pass a file") from None
    except OSError as e:
        raise InputError(f"cannot read {what} {_display(p)}: {e.strerror}") from None
    try:
        _check_stat(os.fstat(fd), p, what, kind)  # the file opened is the file checked
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def read_input(path: StrOrBytesPath, what: str = "file", kind: str = "model") -> bytes:
    """The bytes of a checked regular input, at most its kind's limit."""
    with open_input(path, what, kind) as f:
        limit = limit_of(kind)
        data = f.read(limit + 1)
    if len(data) > limit:  # grew after the check
        raise InputError(f"{what} {_display(path)} is more than {human_bytes(limit)}")
    return data


def _check_replaceable(path: StrOrBytesPath, what: str, allowed: Callable[[int], bool],
                       kinds: str) -> str:
    """`path` (checked as text) when it does not exist or its lstat mode passes `allowed`."""
    p = check_path_text(path, f"{what} path")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return p
    except NotADirectoryError:
        raise InputError(f"cannot write the {what} {_display(p)}: a parent is not a folder") from None
    if allowed(st.st_mode):
        return p
    raise InputError(f"the {what} {_display(p)} exists and is {kind_of(st.st_mode)}: edgeport "
                     f"only replaces {kinds}", "choose another path, or remove it first")


def check_output(path: StrOrBytesPath, what: str = "output") -> str:
    """InputError unless `path` does not exist or is a regular file (not a link, device, FIFO)."""
    return _check_replaceable(path, what, stat.S_ISREG, "regular files")


def check_output_dir(path: StrOrBytesPath, what: str = "output") -> str:
    """Like check_output, for outputs that are folders (a .mlpackage): a real folder or absent."""
    return _check_replaceable(path, what, lambda m: stat.S_ISDIR(m) or stat.S_ISREG(m),
                              "regular files and folders")


def same_file(a: StrOrBytesPath, b: StrOrBytesPath) -> bool:
    """True when `a` and `b` name the same file (same device and inode, or the same real path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def tensor_bytes(shape: Iterable[object], itemsize: int) -> int:
    """Bytes of a tensor of `shape` (unknown dims count as 1), as a Python int (no overflow)."""
    n = int(itemsize)
    for d in shape:
        d = 1 if d is None or (isinstance(d, int) and d < 0) else d
        n *= int(d) if isinstance(d, int) else 1
    return n


def check_tensor_size(model: StrOrBytesPath, name: object, shape: Iterable[object], itemsize: int,
                      err: type[EdgeportError] = InputError) -> int:
    """`err` (InputError by default) when one tensor would need more than the tensor limit."""
    need = tensor_bytes(shape, itemsize)
    limit = limit_of("tensor")
    if need > limit:
        raise err(f"{_display(model)}: tensor {printable(name)!s} of shape {list(shape)} needs "
                  f"{human_bytes(need)}, more than the {human_bytes(limit)} edgeport allows",
                  "the model is damaged, or not meant for a device; EDGEPORT_MAX_TENSOR_BYTES raises the limit")
    return need


class NoSpace(EdgeportError):
    """The disk filled up while writing an output (exit 1; nothing partial is left)."""


def is_no_space(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return True
    try:
        text = str(e)
    except Exception:
        return False
    return "No space left on device" in text or "Disk quota exceeded" in text


def no_space(path: StrOrBytesPath) -> NoSpace:
    return NoSpace(f"no space left writing {_display(path)}", "free some disk space and run again")
