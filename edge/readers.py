"""One reader per kind of file edgeport reads back: arrays (.npz / .npy) and JSON documents.

Nothing else parses these files. Each reader takes only a regular file (a FIFO never hangs
it) of bounded size, checks what the file declares before anything is inflated or
allocated, and turns every failure into one InputError line (exit 2):

  read_arrays(path)      {name: numpy array} of an .npz or .npy. Zip member sizes and every
                         array's declared shape and dtype are checked against the limit of
                         `kind` before a byte is inflated; inflation is capped at the declared
                         size (a deflate bomb stops there); object arrays (pickles) are refused;
                         a truncated file is named as truncated.
  read_json(path, ...)   a JSON document checked against a schema of typed, bounded fields
                         (see `Int`, `Float`, `Str`, `List`, `Obj`, `Map`, `Any`).

The schemas of manifests and folder state live beside the code that writes them
(converters/manifest.py, converters/pipeline/folder.py); the sidecar's in edge/sidecar.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from typing import TYPE_CHECKING, NoReturn

from .errors import InputError
from .files import human_bytes, limit_of, open_input, printable, read_input

if TYPE_CHECKING:
    import typing
    from typing import IO

    import numpy as np
    from _typeshed import StrPath

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP = b"PK\x05\x06"
MAX_ARRAYS = 4096          # members of one .npz
_CHUNK = 1 << 20


# -- arrays --------------------------------------------------------------------------------------
def _fail(what: str, path: StrPath, why: str, hint: str | None = None) -> NoReturn:
    raise InputError(f"{what} {printable(path)}: {why}", hint)


def _npy_header(f: IO[bytes], what: str, path: StrPath,
                name: str | None) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header bytes) of the .npy stream `f`, nothing more read."""
    import numpy as np
    from numpy.lib import format as npf

    where = f"array '{printable(name)}'" if name else "the array"
    try:
        version = npf.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npf.read_array_header_1_0(f, max_header_size=10000)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npf.read_array_header_2_0(f, max_header_size=10000)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, TypeError, SyntaxError, EOFError, OSError, zipfile.BadZipFile) as e:
        _fail(what, path, f"{where} has no valid .npy header ({str(e).splitlines()[0][:100]})",
              "write it with numpy.save or numpy.savez")
    if dtype.hasobject:
        _fail(what, path, f"{where} holds Python objects (a pickle); edgeport reads only plain "
                          "numeric arrays", "save numeric arrays, e.g. x.astype(numpy.float32)")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        _fail(what, path, f"{where} declares an invalid shape {shape}")
    n = int(dtype.itemsize)
    for d in shape:
        n *= d
    return tuple(shape), fortran, np.dtype(dtype), n


def _read_exact(f: IO[bytes], n: int, what: str, path: StrPath, name: str | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            where = f"array '{printable(name)}'" if name else "the array"
            _fail(what, path, f"the file is truncated: {where} declares {human_bytes(n)} but holds "
                              f"{human_bytes(len(buf))}", "write the file again")
        buf += chunk
    return bytes(buf)


def _array(f: IO[bytes], what: str, path: StrPath, name: str | None, budget: int, limit_kind: str,
           member_size: int | None = None) -> tuple[np.ndarray, int]:
    """One array from the .npy stream `f`; `budget` is the bytes still allowed."""
    import numpy as np

    shape, fortran, dtype, nbytes = _npy_header(f, what, path, name)
    where = f"array '{printable(name)}'" if name else "the array"
    if nbytes > budget:
        _fail(what, path, f"{where} declares shape {list(shape)} of {dtype.name}: "
                          f"{human_bytes(nbytes)}, more than the {human_bytes(limit_of(limit_kind))} "
                          f"edgeport reads", f"EDGEPORT_MAX_{limit_kind.upper()}_BYTES raises the limit")
    if member_size is not None:
        header = f.tell() if hasattr(f, "tell") else None
        if header is not None and member_size - header < nbytes:
            _fail(what, path, f"the file is truncated: {where} declares {human_bytes(nbytes)} but "
                              f"holds {human_bytes(max(0, member_size - header))}",
                  "write the file again")
    data = _read_exact(f, nbytes, what, path, name)
    arr = np.frombuffer(data, dtype=dtype)
    arr = arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)
    return arr.copy(), nbytes


def read_arrays(path: StrPath, what: str = "--data", kind: str = "arrays",
                hint: str | None = None) -> dict[str, np.ndarray]:
    """{name: array} of the .npz (or .npy, keyed by its file stem) at `path`.

    Only a regular file within the limit of `kind`; every zip member's declared size and
    every array's declared shape are checked before inflating it, so the total inflated is
    at most that limit; object arrays are refused (no pickles). InputError on any failure.
    """
    hint = hint or "write it with numpy.savez(path, input_name=array, ...)"
    limit = limit_of(kind)
    with open_input(path, what, "model") as f:
        head = f.read(8)
        f.seek(0)
        if head.startswith(_NPY_MAGIC):
            size = os.fstat(f.fileno()).st_size
            arr, _ = _array(f, what, path, None, limit, kind, member_size=size)
            stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
            return {stem: arr}
        if not (head.startswith(_ZIP_MAGIC) or head.startswith(_EMPTY_ZIP)):
            _fail(what, path, "is neither an .npz nor an .npy file", hint)
        try:
            z = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            _fail(what, path, f"is not a readable .npz (truncated or damaged: {str(e)[:80]})", hint)
        with z:
            infos = z.infolist()
            if len(infos) > MAX_ARRAYS:
                _fail(what, path, f"holds {len(infos)} members, more than the {MAX_ARRAYS} edgeport reads")
            total = sum(i.file_size for i in infos)
            if total > limit:
                _fail(what, path, f"would inflate to {human_bytes(total)}, more than the "
                                  f"{human_bytes(limit)} edgeport reads",
                      f"EDGEPORT_MAX_{kind.upper()}_BYTES raises the limit")
            out: dict[str, np.ndarray] = {}
            budget = limit
            for info in infos:
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if info.is_dir() or not info.filename.endswith(".npy"):
                    _fail(what, path, f"member '{printable(info.filename)}' is not an .npy array", hint)
                if name in out:
                    _fail(what, path, f"holds the array '{printable(name)}' twice")
                try:
                    with z.open(info) as m:  # zipfile stops inflating at the declared size
                        arr, n = _array(m, what, path, name, min(budget, info.file_size), kind,
                                        member_size=info.file_size)
                except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
                    _fail(what, path, f"array '{printable(name)}' is damaged or truncated "
                                      f"({str(e).splitlines()[0][:80] if str(e) else type(e).__name__})",
                          "write the file again")
                budget -= n
                out[name] = arr
    return out


# -- JSON documents with a schema ----------------------------------------------------------------
class SchemaError(Exception):
    pass


class _Spec:
    optional = False

    def __init__(self, optional: bool = False) -> None:
        self.optional = optional

    def check(self, v: typing.Any, where: str) -> typing.Any:
        """`v` checked (and normalised) for the field `where`, or SchemaError; every spec has one."""
        raise NotImplementedError


class Int(_Spec):
    def __init__(self, lo: int = 0, hi: int = 1 << 62, optional: bool = False) -> None:
        super().__init__(optional)
        self.lo, self.hi = lo, hi

    def check(self, v: typing.Any, where: str) -> typing.Any:
        if isinstance(v, bool) or not isinstance(v, int):
            raise SchemaError(f"'{where}' is not an integer")
        if not self.lo <= v <= self.hi:
            raise SchemaError(f"'{where}' = {v} is out of range ({self.lo}..{self.hi})")
        return v


class Float(_Spec):
    def __init__(self, lo: float = -1e300, hi: float = 1e300, optional: bool = False) -> None:
        super().__init__(optional)
        self.lo, self.hi = lo, hi

    def check(self, v: typing.Any, where: str) -> typing.Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SchemaError(f"'{where}' is not a finite number")
        if not self.lo <= v <= self.hi:
            raise SchemaError(f"'{where}' = {v} is out of range ({self.lo}..{self.hi})")
        return v


class Bool(_Spec):
    def check(self, v: typing.Any, where: str) -> typing.Any:
        if not isinstance(v, bool):
            raise SchemaError(f"'{where}' is not true or false")
        return v


class Str(_Spec):
    def __init__(self, max_len: int = 4096, choices: typing.Collection[str] | None = None,
                 pattern: str | None = None, optional: bool = False) -> None:
        super().__init__(optional)
        self.max_len, self.choices = max_len, choices
        self.pattern = re.compile(pattern) if pattern else None

    def check(self, v: typing.Any, where: str) -> typing.Any:
        if not isinstance(v, str):
            raise SchemaError(f"'{where}' is not a string")
        if len(v) > self.max_len:
            raise SchemaError(f"'{where}' is longer than {self.max_len} characters")
        if self.choices is not None and v not in self.choices:
            raise SchemaError(f"'{where}' is {printable(v)[:40]!r}, not one of {', '.join(self.choices)}")
        if self.pattern is not None and not self.pattern.fullmatch(v):
            raise SchemaError(f"'{where}' is not in the expected form")
        return v


class List(_Spec):
    def __init__(self, item: _Spec, max_len: int = 1 << 20, optional: bool = False) -> None:
        super().__init__(optional)
        self.item, self.max_len = item, max_len

    def check(self, v: typing.Any, where: str) -> typing.Any:
        if not isinstance(v, list):
            raise SchemaError(f"'{where}' is not a list")
        if len(v) > self.max_len:
            raise SchemaError(f"'{where}' has more than {self.max_len} entries")
        return [_check(self.item, x, f"{where}[{i}]") for i, x in enumerate(v)]


class Map(_Spec):
    """An object with free keys (strings up to `key_len`) and values of one spec."""

    def __init__(self, value: _Spec, max_len: int = 1 << 20, key_len: int = 4096,
                 optional: bool = False) -> None:
        super().__init__(optional)
        self.value, self.max_len, self.key_len = value, max_len, key_len

    def check(self, v: typing.Any, where: str) -> typing.Any:
        if not isinstance(v, dict):
            raise SchemaError(f"'{where}' is not an object")
        if len(v) > self.max_len:
            raise SchemaError(f"'{where}' has more than {self.max_len} entries")
        for k in v:
            if len(k) > self.key_len:
                raise SchemaError(f"'{where}' has a key longer than {self.key_len} characters")
        return {k: _check(self.value, x, f"{where}.{printable(k)[:40]}") for k, x in v.items()}


class Obj(_Spec):
    """An object with known fields (`fields`: name -> spec; optional ones may be absent or
    null). Unknown fields are kept unless `strict`."""

    def __init__(self, fields: dict[str, _Spec], strict: bool = False, optional: bool = False) -> None:
        super().__init__(optional)
        self.fields, self.strict = fields, strict

    def check(self, v: typing.Any, where: str) -> typing.Any:
        if not isinstance(v, dict):
            raise SchemaError(f"'{where or 'the document'}' is not an object")
        if self.strict:
            extra = [k for k in v if k not in self.fields]
            if extra:
                raise SchemaError(f"'{where or 'the document'}' has an unknown field "
                                  f"'{printable(extra[0])[:40]}'")
        out = dict(v)
        for name, spec in self.fields.items():
            out[name] = _check(spec, v.get(name), f"{where}.{name}" if where else name,
                               missing=name not in v)
        return out


class Any(_Spec):
    """Any JSON value (depth is bounded by the parser)."""

    def check(self, v: typing.Any, where: str) -> typing.Any:
        return v


def _check(spec: _Spec, v: typing.Any, where: str, missing: bool = False) -> typing.Any:
    if v is None:
        if spec.optional or isinstance(spec, Any):
            return None
        raise SchemaError(f"'{where}' is missing" if missing else f"'{where}' is null")
    return spec.check(v, where)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def check_schema(data: typing.Any, schema: _Spec) -> typing.Any:
    """`data` checked against `schema`: the checked value, or SchemaError naming the field."""
    return _check(schema, data, "")


def parse_json(raw: bytes, what: str, path: StrPath, kind: str = "json") -> typing.Any:
    """The JSON value of `raw` (bytes); InputError naming the file on bad UTF-8, bad JSON,
    NaN/Infinity or nesting too deep."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        _fail(what, path, "is not UTF-8 text")
    except RecursionError:
        _fail(what, path, "is nested too deeply")
    except ValueError as e:
        _fail(what, path, f"is not valid JSON ({str(e).splitlines()[0][:80]})")


def read_json(path: StrPath, what: str, kind: str, schema: _Spec, hint: str | None = None) -> typing.Any:
    """The JSON document at `path`, checked against `schema`: only a regular file within the
    limit of `kind`; one InputError line naming the file and the field on any failure."""
    data = parse_json(read_input(path, what, kind), what, path, kind)
    try:
        return check_schema(data, schema)
    except SchemaError as e:
        _fail(what, path, str(e), hint)
