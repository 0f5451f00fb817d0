"""Files and folders written atomically, and values made JSON-safe.

Shared by the report writers (demo, pipeline), the command line and the
model folders of the inference package. NumPy only: importing it stays light.

An atomic write goes through a hidden temporary file (``.tmp-*``) or folder
beside the target and a rename, so a reader sees the old version or the whole
new one, never a mixture. The temporary is removed on every exit Python can
catch: an exception, Ctrl-C (KeyboardInterrupt), normal interpreter exit
(``atexit``), and SIGTERM inside :func:`sigterm_as_exit` (the command line
runs in it). SIGKILL or a power cut can still leave a hidden ``.tmp-*``
beside the target; the target itself is then the old version.
"""

import atexit
import contextlib
import math
import os
import shutil
import signal
import tempfile
import threading

import numpy as np

#: Exit status of a process stopped by SIGTERM (128 + 15, as a shell reports it).
SIGTERM_STATUS = 128 + signal.SIGTERM

# Temporaries of writes in progress (path -> the writing process's id): removed at interpreter exit if a write
# never got to clean up. The id keeps a forked child's exit from touching its parent's writes.
_LIVE = {}
# Folders moved aside during a folder swap (path -> (path to put them back to, process id)).
_ASIDE = {}


def json_safe(value):
    """Convert NumPy scalars and arrays (and nested containers) to JSON types; NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        # JSON has no NaN or infinity: write them as null.
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# --------------------------------------------------------------------------- cleanup on exit


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@atexit.register
def _remove_leftovers():
    """Last resort at interpreter exit: put folders moved aside back, remove temporaries."""
    pid = os.getpid()
    for aside, (target, owner) in list(_ASIDE.items()):
        if owner == pid and not os.path.lexists(target):
            with contextlib.suppress(OSError):
                os.rename(aside, target)
    for path, owner in list(_LIVE.items()):
        if owner == pid:
            _remove(path)
    _ASIDE.clear()
    _LIVE.clear()


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM inside :func:`sigterm_as_exit`."""


@contextlib.contextmanager
def sigterm_as_exit():
    """Within the block, SIGTERM raises :class:`Terminated` (a ``SystemExit``, status 143).

    The default action of SIGTERM ends the process at once, leaving the
    temporary of a write in progress behind; raised as an exception, it runs
    the ``finally`` blocks that remove it. Only the main thread can install
    signal handlers: elsewhere the block runs unchanged. The previous handler
    is restored afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(SIGTERM_STATUS)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


# --------------------------------------------------------------------------- files


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder):
    """Make the renames in ``folder`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _write_stream(stream, data):
    if callable(data):
        data(stream)
    else:
        stream.write(data)
    stream.flush()
    os.fsync(stream.fileno())


def _check_parent(path, what):
    """The existing folder that will hold ``path``; a clear error when there is none."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise NotADirectoryError(f"Cannot write {what} {os.fspath(path)!r}: {folder!r} is a file, not a folder.")
        raise FileNotFoundError(f"Cannot write {what} {os.fspath(path)!r}: the folder {folder!r} does not exist. "
                                "Create it first.")
    return folder


def _temporary(make, folder, path, what):
    """``make()`` (mkstemp or mkdtemp in ``folder``) with the errors rephrased for ``path``."""
    try:
        return make()
    except PermissionError as exc:
        raise PermissionError(f"Cannot write {what} {os.fspath(path)!r}: no permission to create files in "
                              f"{folder!r} ({exc.strerror}). Choose a writable folder.") from None
    except OSError as exc:
        raise OSError(exc.errno, f"Cannot write {what} {os.fspath(path)!r} in {folder!r}: {exc.strerror}") from None


def check_writable_file(path, what="the file"):
    """Raise a clear error unless ``path`` can be written as a file: not a folder, in an existing writable folder.

    Run before any work, so that a long job does not end on a path it cannot
    write. Writability is probed by creating (and removing) a hidden file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"Cannot write {what} {path!r}: it is a folder. Give a file name.")
    _probe(_check_parent(path, what), path, what)
    return path


def check_writable_folder(folder, what="the folder"):
    """Raise a clear error unless ``folder`` is an existing folder in which files can be created."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        kind = "is a file" if os.path.exists(folder) else "does not exist"
        raise NotADirectoryError(f"Cannot write {what} {folder!r}: it {kind}; a folder is needed.")
    _probe(folder, folder, what)
    return folder


def _probe(folder, path, what):
    """Create and remove a hidden file in ``folder``: a PermissionError (or OSError) if it cannot be written."""
    handle, probe = _temporary(lambda: tempfile.mkstemp(dir=folder, prefix=".tmp-probe-"), folder, path, what)
    os.close(handle)
    os.unlink(probe)


def write_atomic(path, data):
    """Write ``data`` to ``path`` through a synced temporary file in the same folder and a rename.

    ``data`` is bytes, or a function that writes to the binary stream it is
    given (``np.savez``, ``figure.savefig``). A reader sees the old file or
    the whole new one, never half of it; the temporary is removed on any
    exit Python can catch (see the module docstring).

    Raises
    ------
    IsADirectoryError, FileNotFoundError, NotADirectoryError, PermissionError
        When ``path`` is a folder, its folder does not exist, or cannot be written.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"Cannot write {path!r}: it is a folder. Give a file name.")
    folder = _check_parent(path, "the file")
    handle, temporary = _temporary(
        lambda: tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path)), folder, path, "the file")
    _LIVE[temporary] = os.getpid()
    try:
        with os.fdopen(handle, "wb") as stream:
            _write_stream(stream, data)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it 0600
        os.replace(temporary, path)
        _fsync_folder(folder)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        _LIVE.pop(temporary, None)


# --------------------------------------------------------------------------- folders


def check_folder_target(path, replaceable=(), *, probe=False):
    """Raise a clear error unless ``path`` can take a folder written by :func:`write_folder_atomic`.

    ``path`` may be missing (its parent must exist), or an existing folder
    that holds nothing but names in ``replaceable`` (an earlier save's
    files): saving replaces the whole folder, and must not delete anything
    else. With ``probe``, also check that the folder beside it can be
    written (a hidden file is created and removed). Returns the absolute
    path (a symbolic link resolved).
    """
    path = os.path.realpath(os.fspath(path))
    parent = _check_parent(path, "the folder")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise NotADirectoryError(f"Cannot write the folder {path!r}: a file of that name exists. Give a folder "
                                     "path (new, empty, or an earlier save of the same kind).")
        others = sorted(set(os.listdir(path)) - set(replaceable))
        if others:
            shown = ", ".join(repr(name) for name in others[:5]) + (", ..." if len(others) > 5 else "")
            raise FileExistsError(f"Cannot write the folder {path!r}: it holds other files ({shown}), and saving "
                                  "replaces the whole folder. Save to a new or empty folder, or over an earlier "
                                  "save.")
    if probe:
        _probe(parent, path, "the folder")
    return path


def write_folder_atomic(path, files, *, replaceable=None):
    """Write a folder of files as one unit: a reader sees the old folder or the whole new one.

    The files are written (and synced) into a hidden temporary folder beside
    ``path``; then an existing ``path`` is renamed aside, the new folder
    renamed into place, and the old one removed. If anything fails (or the
    process is interrupted, see the module docstring) before the new folder
    is in place, the old one is put back, so ``path`` always holds either the
    old folder or the new one.

    Parameters
    ----------
    path : str or os.PathLike
        The folder. If it exists it may only hold names in ``replaceable``.
    files : dict of str to bytes or callable
        File name -> content, or a function that writes to the binary
        stream it is given.
    replaceable : iterable of str, optional
        Names an existing folder may hold (default: the names in ``files``).
    """
    path = check_folder_target(path, files if replaceable is None else replaceable)
    parent, name = os.path.split(path)
    staging = _temporary(lambda: tempfile.mkdtemp(dir=parent, prefix=f".tmp-{name}-"), parent, path, "the folder")
    _LIVE[staging] = os.getpid()
    aside = None
    try:
        for file_name, data in files.items():
            if os.path.basename(file_name) != file_name or file_name in ("", ".", ".."):
                raise ValueError(f"File names in a folder write must be plain names. Got {file_name!r}.")
            with open(os.path.join(staging, file_name), "xb") as stream:
                _write_stream(stream, data)
        _fsync_folder(staging)
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0700
        if os.path.lexists(path):
            aside = staging + "-old"
            _ASIDE[aside] = (path, os.getpid())
            os.rename(path, aside)
        os.rename(staging, path)
        _fsync_folder(parent)
    finally:
        if aside is not None and os.path.lexists(aside):
            if os.path.lexists(path):
                _remove(aside)  # the new folder is in place
            else:
                os.rename(aside, path)  # it is not: put the old one back
        if os.path.lexists(staging):
            _remove(staging)
        _ASIDE.pop(aside, None)
        _LIVE.pop(staging, None)
