"""Label files: one label a line (line number = id), or `id label` / `id: label` lines."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import InputError
from .files import printable, read_input

if TYPE_CHECKING:
    from _typeshed import StrPath

_PAIR = re.compile(r"[:\s]+")
MAX_ID = 1_000_000


def read_labels(path: StrPath, encoding: str = "utf-8") -> dict[int, str]:
    """Return {id: label}. Accepts both common forms, as pycoral's read_label_file does.

    The file must be a regular file (at most 16 MB); a UTF-8 byte order mark is dropped;
    control characters (NUL, terminal escapes) are shown escaped, never printed raw; an id
    given twice is an error (a class would be left unlabelled or mislabelled).
    """
    try:
        data = read_input(path, "labels file", "labels")
    except InputError as e:
        if "is a folder" in e.message:
            raise InputError(f"labels file {printable(path)} is a folder", "pass a text file") from None
        if "does not exist" in e.message:
            raise InputError(f"cannot read labels file {printable(path)}: No such file or directory") from None
        raise
    try:
        text = data.decode("utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding)
    except (UnicodeDecodeError, LookupError):
        raise InputError(f"labels file {printable(path)} is not UTF-8 text", "pass a text file") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    pairs = [_PAIR.split(line, maxsplit=1) for line in lines]
    if lines and all(len(p) == 2 and p[0].isdigit() for p in pairs if p[0]):
        out: dict[int, str] = {}
        where: dict[int, int] = {}
        for n, p in enumerate(pairs, 1):
            if not p[0]:
                continue
            i = int(p[0]) if len(p[0]) <= 9 else MAX_ID + 1
            if i > MAX_ID:
                raise InputError(f"labels file {printable(path)} gives id {printable(p[0])[:20]} on line {n}, "
                                 f"above {MAX_ID:,}", "class ids count from 0 up to the class count")
            if i in out:
                raise InputError(f"labels file {printable(path)} gives id {i} twice (lines {where[i]} and {n})",
                                 "give each class id once")
            out[i], where[i] = printable(p[1].strip()), n
        return out
    return {i: printable(line) for i, line in enumerate(lines)}


def check_labels(labels: dict[int, str] | None, num_classes: int) -> str | None:
    """A warning string when the label count does not match the model's classes, else None."""
    if not labels:
        return None
    top = max(labels) + 1
    if top == num_classes:
        return None
    if len(labels) != top:  # ids with gaps: some classes have no label
        return (f"the labels file has {len(labels)} labels with ids up to {top - 1}, "
                f"and the model has {num_classes} classes")
    if top == num_classes - 1:
        return (f"the labels file has {top} labels for {num_classes} classes: "
                "the model probably has a background class 0; ids are used as they are")
    return f"the labels file has {top} labels but the model has {num_classes} classes"
