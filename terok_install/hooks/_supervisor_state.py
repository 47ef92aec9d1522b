"""Process, pid-file and path primitives shared by the hook, the wrapper,
terok-panic and the installer.

Standard library only, Python 3.9+, and cheap to import: this module sits on
the critical path of every supervised container start and stop, so it avoids
modules that drag in ``re`` or ``enum`` (``json``, ``signal``, ``subprocess``)
and parses JSON with the C scanner behind the ``json`` package instead.

Everything that reads ``/proc`` takes the proc root as an argument so tests
can point it at a folder of their own.
"""

import os
import time

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None

SIDECAR_ANNOTATION = "terok.sandbox.sidecar"
WRAPPER_NAME = "supervisor_wrapper.py"
HOOK_NAME = "supervisor_hook.py"
SANDBOX_BIN_NAME = "terok-sandbox"
TRUSTED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SIGTERM = 15
SIGKILL = 9
PROC = "/proc"
MAX_JSON_BYTES = 1 << 20
PID_MAX = 1 << 22  # the kernel's PID_MAX_LIMIT
PIDFD_BATCH = 256  # well below the usual limit of 1024 open files

_CHILD_VERB = b"supervise-child"
_CHILD_MODULE = b"terok_sandbox"
_ID_FIRST = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID_REST = _ID_FIRST | frozenset("_.-")
_JSON_SPACE = " \t\n\r"


class _Scanner:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float
    memo = {}


_scan = _json.make_scanner(_Scanner) if _json else None


def parse_json(text):
    """Parse one JSON document; raise ValueError if *text* is not one."""
    if _scan is None:  # pragma: no cover
        import json
        return json.loads(text)
    text = text.strip(_JSON_SPACE)
    try:
        value, end = _scan(text, 0)
    except StopIteration as stop:
        raise ValueError("invalid JSON at offset %s" % stop.value) from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if end != len(text):
        raise ValueError("extra data at offset %d" % end)
    return value


def valid_container_id(cid):
    """Podman's id and name alphabet; never empty, never an option."""
    return (isinstance(cid, str) and 0 < len(cid) <= 256
            and cid[0] in _ID_FIRST and _ID_REST.issuperset(cid[1:]))


# --- paths ---------------------------------------------------------------

def real_root(proc=PROC):
    """True for uid 0 in the initial user namespace, not rootless uid 0."""
    if os.geteuid() != 0:
        return False
    return host_uid(proc) == 0


def host_uid(proc=PROC):
    """The host uid behind our effective uid, read through the uid map."""
    euid = os.geteuid()
    try:
        with open(proc + "/self/uid_map", "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return euid
    for line in lines:
        fields = line.split()
        if len(fields) != 3:
            continue
        inside, outside, count = (int(x) for x in fields)
        if inside <= euid < inside + count:
            return outside + euid - inside
    return euid


def xdg_dir(env, name, home, fallback):
    """An XDG base directory; relative values are ignored as the spec says."""
    value = env.get(name, "")
    if value.startswith("/"):
        return value
    return os.path.join(home, fallback)


def env_state_root(env):
    """The state root named by the environment, or None."""
    if env.get("TEROK_SANDBOX_STATE_DIR"):
        return env["TEROK_SANDBOX_STATE_DIR"]
    if env.get("TEROK_ROOT"):
        return os.path.join(env["TEROK_ROOT"], "sandbox")
    return None


def default_state_root(is_root, env, home):
    """Where the state root lives when nothing configures it."""
    if is_root:
        return "/var/lib/terok/sandbox"
    data = xdg_dir(env, "XDG_DATA_HOME", home, ".local/share")
    return os.path.join(data, "terok", "sandbox")


def record_path(is_root, env, home):
    """The install record: which roots installs used and what they changed."""
    if env.get("TEROK_INSTALL_RECORD"):
        return env["TEROK_INSTALL_RECORD"]
    if is_root:
        return "/var/lib/terok-sandbox/install-record.json"
    state = xdg_dir(env, "XDG_STATE_HOME", home, ".local/state")
    return os.path.join(state, "terok-sandbox", "install-record.json")


def read_regular(path, limit):
    """(first *limit* bytes, owner uid) of a regular file.

    Never follows a final symlink nor blocks on a FIFO: root reads these
    files in users' homes, where either could be planted.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                 | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if info.st_mode & 0o170000 != 0o100000:
            raise ValueError("not a regular file")
        return os.read(fd, limit), info.st_uid
    finally:
        os.close(fd)


def recorded_roots(path):
    """State roots named by an install record; [] if it is absent or bad."""
    try:
        data, _ = read_regular(path, MAX_JSON_BYTES)
        installs = parse_json(data.decode("utf-8"))["installs"]
        return [i["state_root"] for i in installs
                if isinstance(i.get("state_root"), str)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def pid_file(root, cid):
    return os.path.join(root, "pids", "supervisor-%s.pid" % cid)


def read_pid_file(path):
    """(process group, owner uid) of a pid file; ValueError if it names
    no group we may signal."""
    data, owner = read_regular(path, 64)
    text = data.strip()
    if not text.isdigit():
        raise ValueError("not a process id: %r" % text[:20])
    pgid = int(text)
    if pgid <= 1 or pgid > PID_MAX:
        raise ValueError("refusing process group %d" % pgid)
    return pgid, owner


def sandbox_bin_candidates(env, home, exe_dir):
    """Where to look for terok-sandbox, in order: env, PATH, ours, per-user."""
    found = []
    if env.get("TEROK_SANDBOX_BIN"):
        found.append(env["TEROK_SANDBOX_BIN"])
    # The trusted folders too: dpkg runs maintainer scripts without
    # /usr/local/bin on PATH, while the wrapper's PATH has it.
    folders = env.get("PATH", "").split(":") + TRUSTED_PATH.split(":")
    for folder in folders:
        path = os.path.join(folder, SANDBOX_BIN_NAME)
        if folder.startswith("/") and path not in found:
            found.append(path)
    found.append(os.path.join(exe_dir, SANDBOX_BIN_NAME))
    if home and home != "/":
        found.append(os.path.join(home, ".local", "bin", SANDBOX_BIN_NAME))
    return found


def find_sandbox_bin(env, home, exe_dir):
    """The first executable candidate, or None."""
    for path in sandbox_bin_candidates(env, home, exe_dir):
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


# --- processes -----------------------------------------------------------

def _read_proc(proc, pid, name, limit):
    """The bytes of ``<proc>/<pid>/<name>``, or None if the process is gone.

    OSError when /proc cannot tell, e.g. with no file descriptor left:
    that must never pass for a process's end.
    """
    try:
        fd = os.open("%s/%d/%s" % (proc, pid, name), os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        return os.read(fd, limit)
    except ProcessLookupError:  # it exited while we read
        return None
    finally:
        os.close(fd)


def read_argv(pid, proc=PROC):
    """A process's argv as bytes; None if it is gone, a kernel thread, or
    cannot be read, so that it is never taken for one of ours."""
    try:
        data = _read_proc(proc, pid, "cmdline", 1 << 16)
    except OSError:
        return None
    if not data:
        return None
    return data.rstrip(b"\0").split(b"\0")


def read_stat(pid, proc=PROC):
    """(state letter, process group) of a process, or None if it is gone;
    OSError if /proc cannot tell."""
    data = _read_proc(proc, pid, "stat", 4096)
    if data is None:
        return None
    # The command name may hold spaces and parentheses; fields follow the
    # last ')'.
    fields = data[data.rfind(b")") + 2:].split()
    if len(fields) < 3:
        return None
    return fields[0].decode("ascii", "replace"), int(fields[2])


def running(pid, proc=PROC):
    """True while the process exists and has not exited (zombies have), and
    whenever /proc cannot tell."""
    try:
        stat = read_stat(pid, proc)
    except OSError:
        return True
    return stat is not None and stat[0] not in ("Z", "X")


def list_pids(proc=PROC):
    try:
        names = os.listdir(proc)
    except OSError:
        return []
    return [int(n) for n in names if n.isdigit()]


def wrapper_container(argv, wrapper_paths):
    """The container id if *argv* runs one of *wrapper_paths*, else None.

    The shape is ``<python> [-flags] <wrapper> <id> <absolute sidecar>
    [<pid>]``, compared element by element as bytes.
    """
    if not argv or not os.path.basename(argv[0]).startswith(b"python"):
        return None
    i = 1
    while i < len(argv) and argv[i].startswith(b"-"):
        i += 1
    rest = argv[i:]
    if len(rest) not in (3, 4) or rest[0] not in wrapper_paths:
        return None
    cid, sidecar = rest[1], rest[2]
    if not sidecar.startswith(b"/"):
        return None
    if not valid_container_id(cid.decode("ascii", "replace")):
        return None
    return cid


def child_container(argv):
    """The container id of a ``-m terok_sandbox supervise-child`` argv."""
    if not argv:
        return None
    for i in range(1, len(argv) - 4):
        if (argv[i] == b"-m" and argv[i + 1] == _CHILD_MODULE
                and argv[i + 2] == _CHILD_VERB):
            return argv[i + 4]
    return None


def is_our_wrapper(pid, cid, wrapper_paths, proc=PROC):
    """True if *pid* runs one of *wrapper_paths* for container *cid*."""
    argv = read_argv(pid, proc)
    return argv is not None and wrapper_container(
        argv, wrapper_paths) == cid.encode()


def group_members(pgid, pids, proc=PROC):
    """Members of process group *pgid* among *pids* that still run."""
    members = []
    for pid in pids:
        try:
            stat = read_stat(pid, proc)
        except OSError:  # its group is unknown; the group signal reaches it
            continue
        if stat and stat[1] == pgid and stat[0] not in ("Z", "X"):
            members.append(pid)
    return members


def wait_exited(pids, timeout_s, proc=PROC, sleep=None):
    """Wait until every pid has exited or *timeout_s* passes; return those left.

    A zombie counts as exited: an init that reaps lazily must not make a
    finished group look alive. On the host's /proc it sleeps on pidfds,
    which wake the moment a process exits; for what it cannot watch so
    (a test's fake /proc, no pidfd_open) it polls.
    """
    deadline = time.monotonic() + timeout_s
    left = list(pids)
    pidfds = proc == PROC and sleep is None and hasattr(os, "pidfd_open")
    if left and pidfds:
        left = _sleep_on_pidfds(left, deadline)
    return _poll_exited(left, deadline, proc, sleep or time.sleep)


def _sleep_on_pidfds(pids, deadline):
    """The pids that still run at *deadline* or cannot be watched."""
    left = []
    for start in range(0, len(pids), PIDFD_BATCH):
        left += _sleep_on_batch(pids[start:start + PIDFD_BATCH], deadline)
    return left


def _sleep_on_batch(pids, deadline):
    try:
        import select
    except ImportError:  # a shared module that cannot load now (EMFILE)
        return pids
    fds, unwatched = {}, []
    try:
        for pid in pids:
            try:
                fds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:
                pass
            except OSError:  # an old kernel, EMFILE
                unwatched.append(pid)
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        while fds:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                break
            for fd, _ in poller.poll(remaining_s * 1000):
                poller.unregister(fd)
                os.close(fd)
                del fds[fd]
        return unwatched + list(fds.values())
    finally:
        for fd in fds:
            os.close(fd)


def _poll_exited(pids, deadline, proc, sleep):
    """Poll one pid at a time, so each is read about once however long the
    others take."""
    left = list(pids)
    pause_s = 0.0005
    while left:
        if not running(left[-1], proc):
            left.pop()
            continue
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            break
        sleep(min(pause_s, remaining_s))
        pause_s = min(pause_s * 2, 0.005)
    return [p for p in left if running(p, proc)]


def signal_group(pgid, sig):
    """killpg that refuses groups 0 and 1, negatives and our own."""
    if pgid <= 1 or pgid == os.getpgrp():
        return False
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def hardened_env(proc=PROC):
    """The environment for the wrapper: fixed PATH, the host user's dirs."""
    import pwd
    uid = host_uid(proc)
    env = {"PATH": TRUSTED_PATH, "LANG": "C.UTF-8"}
    try:
        user = pwd.getpwuid(uid)
        env["HOME"], env["USER"] = user.pw_dir, user.pw_name
    except KeyError:
        pass
    runtime_dir = "/run/user/%d" % uid
    if os.path.isdir(runtime_dir):
        env["XDG_RUNTIME_DIR"] = runtime_dir
        if os.path.exists(runtime_dir + "/bus"):
            env["DBUS_SESSION_BUS_ADDRESS"] = "unix:path=%s/bus" % runtime_dir
    return env
