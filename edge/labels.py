"""Label files: one label a line (line number = id), or `id label` / `id: label` lines."""

import re

from .errors import InputError

_PAIR = re.compile(r"[:\s]+")


def read_labels(path, encoding="utf-8"):
    """Return {id: label}. Accepts both common forms, as pycoral's read_label_file does."""
    try:
        with open(path, "r", encoding=encoding) as f:
            lines = f.readlines()
    except IsADirectoryError:
        raise InputError(f"labels file {path} is a folder", "pass a text file") from None
    except OSError as e:
        raise InputError(f"cannot read labels file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"labels file {path} is not UTF-8 text", "pass a text file") from None
    lines = [line.strip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    pairs = [_PAIR.split(line, maxsplit=1) for line in lines]
    if lines and all(len(p) == 2 and p[0].isdigit() for p in pairs if p[0]):
        return {int(p[0]): p[1].strip() for p in pairs if p[0]}
    return {i: line for i, line in enumerate(lines)}


def check_labels(labels, num_classes):
    """A warning string when the label count does not match the model's classes, else None."""
    if not labels:
        return None
    top = max(labels) + 1
    if top == num_classes:
        return None
    if top == num_classes - 1:
        return (f"the labels file has {top} labels for {num_classes} classes: "
                "the model probably has a background class 0; ids are used as they are")
    return f"the labels file has {top} labels but the model has {num_classes} classes"
