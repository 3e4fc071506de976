"""Atomic outputs: write to a temp path beside the target, rename into place on success.

A failed or killed conversion leaves at most a hidden `.NAME.tmp-*` entry (removed on
failure), never a file under the final name; two writers of one target each rename a
complete file, so the last one wins whole.
"""

import contextlib
import os
import shutil
import tempfile

from edge.errors import InputError


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def check_writable_dir(folder):
    """Raise InputError unless `folder` exists (or can be made) and is writable."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {folder}: {e.strerror}") from None
    if not os.path.isdir(folder):
        raise InputError(f"output folder {folder} is a file")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"output folder {folder} is not writable", "choose another with -o")


@contextlib.contextmanager
def atomic_output(final_path, directory=False):
    """Yield a temp path (file or, with directory=True, a folder path not yet created).

    On normal exit the temp is renamed to `final_path` (replacing it); on any exception it
    is deleted and `final_path` is untouched.
    """
    final_path = os.path.abspath(os.fspath(final_path))
    folder = os.path.dirname(final_path)
    check_writable_dir(folder)
    base = os.path.basename(final_path)
    tmp_dir = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=folder)
    # Keep the real name inside the temp folder: tools that derive names from it stay happy.
    tmp = os.path.join(tmp_dir, base)
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise RuntimeError(f"the conversion wrote no output for {base}")
        if directory or os.path.isdir(tmp):
            _replace_dir(tmp, final_path)
        else:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final_path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextlib.contextmanager
def output_lock(final_path):
    """Exclusive right to write `final_path` and its companions (sidecar, logs) until exit.

    A second edgeport writing the same output waits here, so a model and its sidecar always
    come from one run. The lock is flock() on a hidden `.NAME.lock` beside the output: the
    kernel drops it when the process dies (a killed run never blocks the next one), and the
    holder removes the file on exit (a waiter that wakes on a removed file retries).
    Without fcntl (Windows) it does nothing: each file is still replaced whole.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    final_path = os.path.abspath(os.fspath(final_path))
    folder = os.path.dirname(final_path)
    check_writable_dir(folder)
    lock = os.path.join(folder, f".{os.path.basename(final_path)}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def _replace_dir(tmp, final_path):
    """Folders cannot be swapped atomically over an existing one: move the old aside first."""
    if os.path.lexists(final_path):
        aside = tempfile.mkdtemp(prefix=f".{os.path.basename(final_path)}.old-",
                                 dir=os.path.dirname(final_path))
        os.rename(final_path, os.path.join(aside, "old"))
        try:
            os.rename(tmp, final_path)
        except OSError:
            os.rename(os.path.join(aside, "old"), final_path)
            raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(tmp, final_path)


def write_bytes_atomic(path, data):
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text_atomic(path, text):
    write_bytes_atomic(path, text.encode("utf-8"))
