"""Atomic writes, folders with fixed modes, and the install lock.

Podman reads the hooks folder at every container start, so a file must
never be seen half-written: each write goes to a temporary file in the same
folder, is fsynced and renamed over the target.
"""

import errno
import fcntl
import glob
import logging
import os
import stat
from contextlib import contextmanager

from terok_install.errors import UnsafePathError, WriteError

log = logging.getLogger(__name__)

_FIX = ("Free space or fix permissions or mounts there, then run the "
        "command again")


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def same_file(path, data, mode, upto=None):
    """True if *path* holds *data* (its first *upto* bytes, if given)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode) or stat.S_IMODE(info.st_mode) != mode:
        return False
    found = read_bytes(path)
    if upto is None:
        return found == data
    return found is not None and found[:upto] == data[:upto]


def atomic_write(path, data, mode=0o644, upto=None):
    """Put *data* at *path* atomically; False if it was already there."""
    discard_stale_temps(path)
    if same_file(path, data, mode, upto):
        return False
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, ".%s.%d.tmp" % (name, os.getpid()))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                     | os.O_NOFOLLOW, 0o600)
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise WriteError("cannot write %s: %s; nothing there was changed. "
                         "%s" % (path, exc.strerror or exc, _FIX)) from None
    _sync_dir(folder)
    return True


def discard_stale_temps(path):
    """Temporary files a killed writer of *path* left; callers hold the
    install lock, so no live writer owns them."""
    folder, name = os.path.split(path)
    for stale in glob.glob(os.path.join(glob.escape(folder),
                                        ".%s.*.tmp" % glob.escape(name))):
        _discard(stale)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _discard(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _sync_dir(folder):
    try:
        fd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove(path):
    """Remove a file; False if it was not there."""
    discard_stale_temps(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise WriteError("cannot remove %s: %s. %s"
                         % (path, exc.strerror, _FIX)) from None
    return True


def make_dirs(path, mode=0o755):
    """Create *path* and missing parents with *mode*; return those made."""
    made = []
    missing = []
    probe = os.path.abspath(path)
    while not os.path.isdir(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
            os.chmod(folder, mode)  # the umask must not narrow it
        except FileExistsError:
            continue
        except OSError as exc:
            raise WriteError("cannot create %s: %s. %s"
                             % (folder, exc.strerror, _FIX)) from None
        made.append(folder)
    return made


def remove_empty_dirs(folders):
    """rmdir each folder, deepest first, where it is empty."""
    for folder in sorted(folders, key=len, reverse=True):
        try:
            os.rmdir(folder)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST,
                                 errno.ENOENT):
                log.warning("cannot remove %s: %s", folder, exc.strerror)


def open_to_all(path):
    """Add r-x for group and others to *path* and each parent that lacks it.

    Returns {folder: old mode} for what it changed. A registered hooks
    folder that a user cannot read fails every rootless podman run of that
    user, whatever umask or earlier mode caused it.
    """
    changed = {}
    folder = os.path.abspath(path)
    while True:
        mode = stat.S_IMODE(os.stat(folder).st_mode)
        if mode & 0o055 != 0o055:
            os.chmod(folder, mode | 0o055)
            changed[folder] = mode
        if folder == "/":
            return changed
        folder = os.path.dirname(folder)


def check_not_shared(path):
    """Refuse a folder that someone other than us or root could write."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    me = os.geteuid()
    if info.st_uid not in (0, me):
        raise UnsafePathError(
            "%s belongs to uid %d; another user could replace the hook "
            "there. Choose a folder of your own." % (path, info.st_uid))
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise UnsafePathError(
            "%s is writable by group or others (mode %o); another user "
            "could replace the hook there. Run 'chmod go-w %s'."
            % (path, stat.S_IMODE(info.st_mode), path))


@contextmanager
def locked(folder):
    """Hold an exclusive lock on *folder* (created if missing)."""
    while True:
        make_dirs(folder, 0o755)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Whoever held it last may have removed the folder; lock anew.
        try:
            if os.stat(folder).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)
