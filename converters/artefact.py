"""Artefact: a model path, its format and its metadata; the sidecar is its serialised form."""

import datetime
import hashlib
import json
import os
from dataclasses import dataclass, field

from edge.sidecar import read_sidecar, sidecar_path

from converters.atomic import write_text_atomic


def sha256_of(path, chunk=1 << 20):
    """sha256 of a file, or of a folder's files (names and contents, in sorted order)."""
    h = hashlib.sha256()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):  # os.walk does not follow linked folders
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                if os.path.islink(full):
                    h.update(os.path.relpath(full, path).encode() + b" -> " +
                             os.fsencode(os.readlink(full)))
                    continue
                h.update(os.path.relpath(full, path).encode())
                h.update(sha256_of(full).encode())
        return h.hexdigest()
    from edge.files import open_input

    with open_input(path, "file", "model") as f:  # a FIFO or device never hangs the hash
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def size_of(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


@dataclass
class Artefact:
    """A model on disk. `metadata` holds provenance, preprocessing, labels, calibration."""

    path: str
    format: str
    metadata: dict = field(default_factory=dict)

    @property
    def name(self):
        return os.path.basename(self.path.rstrip("/"))

    @property
    def preprocessing(self):
        return self.metadata.get("preprocessing") or {}

    @property
    def labels(self):
        return self.metadata.get("labels")

    def size(self):
        return size_of(self.path)

    def write_sidecar(self):
        write_text_atomic(sidecar_path(self.path), json.dumps(self.metadata, indent=2, sort_keys=True) + "\n")

    @classmethod
    def open(cls, path, fmt=None):
        """An artefact for an existing model, with its sidecar's metadata when there is one."""
        from converters.formats import detect_format

        return cls(os.fspath(path), fmt or detect_format(path), read_sidecar(path))


def source_record(artefact):
    """Who an artefact descends from: its recorded original, else itself (file, sha256, format)."""
    return artefact.metadata.get("source") or {
        "file": artefact.name, "sha256": sha256_of(artefact.path), "format": artefact.format}


def provenance(source, target_format, route, options=None, versions=None):
    """The provenance block of a new artefact made from `source` (an Artefact)."""
    first = source_record(source)
    return {
        "source": first,
        "made_from": {"file": source.name, "format": source.format},
        "format": target_format,
        "route": list(route),
        "options": {k: v for k, v in (options or {}).items() if v is not None},
        "versions": dict(versions or {}),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "edgeport": _edgeport_version(),
    }


def _edgeport_version():
    from edgeport import __version__

    return __version__


def package_versions(*names):
    """{name: version} of installed distributions (missing ones left out)."""
    from importlib import metadata

    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def open_model(path, torch_model=None):
    """The Artefact for a model path; with `torch_model` an undetected file is a PyTorch state dict."""
    from converters.formats import TORCH_MODULE, detect_format
    from edge.errors import InputError

    try:
        fmt = detect_format(path)
    except InputError:
        if torch_model:
            return Artefact.open(path, TORCH_MODULE)
        raise
    return Artefact.open(path, fmt)
