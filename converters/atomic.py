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
from edge.files import check_output, check_output_dir, is_no_space, no_space

# SIGTERM handled like Ctrl-C (Terminated) lives with the run context, which every command
# enters; the pipeline enters it again around its own work.
from edge.run import Terminated, guard_write, terminate_as_interrupt  # noqa: F401


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
    guard_write(final_path)  # declared by the command, and no input of the run
    final_path = os.path.abspath(os.fspath(final_path))
    # Only a regular file (or, for folder outputs, a real folder) is ever replaced: never a
    # device node, a FIFO or a symbolic link (os.replace would swap the node itself).
    folder_output = directory or final_path.endswith((".mlpackage", ".mlmodelc"))
    (check_output_dir if folder_output else check_output)(final_path)
    folder = os.path.dirname(final_path)
    check_writable_dir(folder)
    base = os.path.basename(final_path)
    sweep_stale(final_path)
    try:
        tmp_dir = tempfile.mkdtemp(prefix=f".{base}.tmp-{os.getpid()}-", dir=folder)
    except OSError as e:
        if is_no_space(e):
            raise no_space(final_path) from None
        raise
    # Keep the real name inside the temp folder: tools that derive names from it stay happy.
    tmp = os.path.join(tmp_dir, base)
    try:
        try:
            yield tmp
            if not os.path.exists(tmp):
                raise RuntimeError(f"the conversion wrote no output for {base}")
            if directory or os.path.isdir(tmp):
                check_output_dir(final_path)
                _replace_dir(tmp, final_path)
            else:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                check_output(final_path)  # checked again: it may have appeared meanwhile
                os.replace(tmp, final_path)
        except Exception as e:
            if is_no_space(e):
                raise no_space(final_path) from None
            raise
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
    lock = _lock_path(final_path)
    sweep_stale(final_path)
    while True:
        try:  # O_NOFOLLOW: a symbolic link planted under the lock's name is never followed
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as e:
            raise InputError(f"cannot create the lock file {lock}: {e.strerror}",
                             "remove it if it is not a regular file") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    with contextlib.suppress(OSError):  # who holds it, for people looking at the folder
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
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


def _lock_path(final_path):
    return os.path.join(os.path.dirname(final_path), f".{os.path.basename(final_path)}.lock")


def _pid_alive(pid):
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphans(folder, prefix):
    """Paths in `folder` named `PREFIX<PID>-...` whose process is no longer running.

    Names without a PID (an older edgeport's) and those of live processes are left out.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    out = []
    for name in names:
        if name.startswith(prefix):
            pid = name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                out.append(os.path.join(folder, name))
    return out


def sweep_stale(final_path):
    """Remove `.NAME.tmp-PID-*` temps whose writer is gone, and an unheld `.NAME.lock`.

    A run killed by SIGKILL (or a power cut) cannot clean up; any later run touching the same
    output does. A temp is stale when its PID is no longer running; the lock when nobody holds
    its flock (the kernel drops that when the holder dies). Never fails.
    """
    final_path = os.path.abspath(os.fspath(final_path))
    folder, base = os.path.dirname(final_path), os.path.basename(final_path)
    for path in orphans(folder, f".{base}.tmp-"):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    _sweep_lock(_lock_path(final_path))


def _sweep_lock(lock):
    try:
        import fcntl
    except ImportError:
        return
    try:
        fd = os.open(lock, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # held by a live run
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                os.unlink(lock)
        except OSError:
            pass
    finally:
        os.close(fd)
