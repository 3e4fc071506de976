"""Artefact: a model path, its format and its metadata; the sidecar is its serialised form."""

import datetime
import hashlib
import json
import os
from dataclasses import dataclass, field

from converters.atomic import write_text_atomic
from edge.errors import InputError
from edge.sidecar import read_sidecar, sidecar_path


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
        """Write NAME.edgeport.json; refused (InputError) when it would exceed the sidecar read
        limit, since the next run could not read it back."""
        from edge.files import human_bytes, limit_of

        text = json.dumps(self.metadata, indent=2, sort_keys=True) + "\n"
        size, limit = len(text.encode("utf-8")), limit_of("sidecar")
        if size > limit:
            raise InputError(f"the sidecar of {self.name} would be {human_bytes(size)}, more than the "
                             f"{human_bytes(limit)} edgeport reads back",
                             "too many labels or too much metadata")
        write_text_atomic(sidecar_path(self.path), text)

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
    from edge.version import version

    return version()


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


MAX_PACKAGE_BYTES = 8 << 30
MAX_PACKAGE_FILES = 10_000


class PackageCopy:
    """A private, read-only-use copy of a Core ML package (`.mlpackage` folder).

    coremltools opens a package read-write (it rewrites Manifest.json in place) and follows
    whatever paths the manifest names. So a package is read only from a copy in a private
    temp folder, made after checking that it holds regular files and folders only (no
    symbolic link, device or FIFO), that every manifest path stays inside it, and that it is
    of bounded size. The original is never opened for writing. `.path` is the copy (or, for
    a single-file `.mlmodel`, the checked original); `close()` removes the copy, and so does
    the copy's collection or the interpreter's exit if no caller closed it.
    """

    def __init__(self, path):
        import shutil
        import tempfile
        import weakref

        from edge.files import check_input

        self.original = os.fspath(path).rstrip("/") or os.fspath(path)
        self._tmp = None
        if not os.path.isdir(self.original):
            check_input(self.original, "Core ML model", "model")
            self.path = self.original
            return
        check_package(self.original)
        self._tmp = tempfile.mkdtemp(prefix="edgeport-mlpackage-")
        self._remove = weakref.finalize(self, shutil.rmtree, self._tmp, ignore_errors=True)
        try:
            self.path = os.path.join(self._tmp, os.path.basename(self.original))
            shutil.copytree(self.original, self.path, symlinks=True)
        except BaseException:
            self.close()
            raise

    def close(self):
        if self._tmp:
            self._remove()   # runs once: removes the copy and drops the exit hook
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_package(root):
    """InputError unless the .mlpackage at `root` is safe to copy and read (see PackageCopy)."""
    import stat

    from edge.errors import InputError, ModelFormatError
    from edge.files import printable, read_input

    name = printable(root)
    if os.path.islink(root):
        raise InputError(f"Core ML package {name} is a symbolic link", "pass the package folder itself")
    total = count = 0
    for folder, dirs, files in os.walk(root):  # does not descend into linked folders
        for n in dirs + files:
            p = os.path.join(folder, n)
            st = os.lstat(p)
            rel = printable(os.path.relpath(p, root))
            if stat.S_ISLNK(st.st_mode):
                raise InputError(f"Core ML package {name} holds a symbolic link ({rel}): refused",
                                 "a package must hold its own files")
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                raise InputError(f"Core ML package {name} holds {rel}, which is not a regular file")
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
            count += 1
    if total > MAX_PACKAGE_BYTES or count > MAX_PACKAGE_FILES:
        raise InputError(f"Core ML package {name} is too large ({count} entries, {total} bytes)")
    manifest = os.path.join(root, "Manifest.json")
    try:
        data = json.loads(read_input(manifest, "Core ML manifest", "manifest").decode("utf-8"))
    except InputError as e:
        raise ModelFormatError(f"Core ML package {name}: {e.message}") from None
    except (ValueError, RecursionError):
        raise ModelFormatError(f"Core ML package {name}: Manifest.json is not valid JSON",
                               "the package is damaged: convert it again") from None
    entries = data.get("itemInfoEntries") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise ModelFormatError(f"Core ML package {name}: Manifest.json has no itemInfoEntries")
    data_dir = os.path.join(os.path.realpath(root), "Data")
    for entry in entries.values():
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or not rel or "\0" in rel or os.path.isabs(rel):
            raise ModelFormatError(f"Core ML package {name}: Manifest.json names a bad path {printable(rel)}")
        full = os.path.realpath(os.path.join(data_dir, rel))
        if os.path.commonpath([full, data_dir]) != data_dir:
            raise InputError(f"Core ML package {name}: Manifest.json names {printable(rel)}, which is "
                             "outside the package: refused")
