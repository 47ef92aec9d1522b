#!/usr/bin/python3 -IS
"""OCI hook that starts a terok-sandbox supervisor beside a container and
reaps it when the container stops.

Podman runs it as ``<python> -I -S supervisor_hook.py <stage>`` with the OCI
state on stdin. At ``createRuntime`` it spawns ``supervisor_wrapper.py``
detached in its own session and writes ``<root>/pids/supervisor-<id>.pid``;
at ``poststop`` it ends that process group and the container's stray
``supervise-child`` processes. ``<root>`` is the grandparent of the sidecar
named by the container's ``terok.sandbox.sidecar`` annotation.

A non-zero exit at createRuntime fails the container start, so whatever
happens (bad input, a broken install, a full disk) this script logs and
exits 0. It imports only the standard library and its helper module.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STATE_ROOT = os.path.dirname(HERE)
WRAPPER = os.path.join(STATE_ROOT, "supervisor_wrapper.py")
WRAPPER_B = os.fsencode(WRAPPER)
GRACE_S = 2.0
KILL_WAIT_S = 1.0

_log_path = None
_tag = "-"


def log(message):
    """Tell stderr and append to ``<root>/logs/hook.log``, tagged."""
    line = "%s terok-hook[%s] %s\n" % (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), _tag, message)
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    if _log_path is None:
        return
    try:
        fd = os.open(_log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                     | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        pass


def main(argv, stdin):
    global _log_path, _tag
    stage = argv[1] if len(argv) > 1 else ""
    try:
        import _supervisor_state as st
    except Exception as exc:
        log("cannot import the hook helper (%s); reinstall with "
            "'terok-install install'" % exc)
        return
    oci = read_oci_state(stdin, st)
    if oci is None:
        return
    cid, sidecar, init_pid = oci
    _tag = cid[:12]
    root = sidecar_root(sidecar)
    if root is None:
        log("%s: annotation %r is not <root>/sidecar/<file>; ignored"
            % (stage, sidecar[:200]))
        return
    logs = os.path.join(root, "logs")
    if stage == "createRuntime":
        why = check_sidecar(st, sidecar)
        if why:
            log("createRuntime: %s; no supervisor started" % why)
            return
        if ensure_dir(logs):
            _log_path = os.path.join(logs, "hook.log")
        start(st, cid, sidecar, root, init_pid)
    elif stage == "poststop":
        if os.path.isdir(logs):
            _log_path = os.path.join(logs, "hook.log")
        stop(st, cid, root)
    else:
        log("unknown stage %r; nothing done" % stage)


def read_oci_state(stdin, st):
    """(id, sidecar, init pid or None) of an OCI state we act on, or None."""
    try:
        data = stdin.read(st.MAX_JSON_BYTES + 1)
        if len(data) > st.MAX_JSON_BYTES:
            raise ValueError("OCI state larger than %d bytes"
                             % st.MAX_JSON_BYTES)
        state = st.parse_json(data.decode("utf-8"))
    except (OSError, ValueError) as exc:
        log("unreadable OCI state (%s); nothing done" % exc)
        return None
    if not isinstance(state, dict):
        log("OCI state is not a JSON object; nothing done")
        return None
    cid = state.get("id")
    annotations = state.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
    sidecar = annotations.get(st.SIDECAR_ANNOTATION)
    if not st.valid_container_id(cid) or not isinstance(sidecar, str):
        log("no container id or no %s annotation; nothing done"
            % st.SIDECAR_ANNOTATION)
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        pid = None
    return cid, sidecar, pid


def sidecar_root(path):
    """``<root>`` for an absolute ``<root>/sidecar/<name>`` path, else None."""
    if ("\0" in path or not path.startswith("/")
            or ".." in path.split("/") or path != os.path.normpath(path)):
        return None
    folder = os.path.dirname(path)
    if os.path.basename(folder) != "sidecar" or folder == path:
        return None
    return os.path.dirname(folder)


def check_sidecar(st, path):
    """None if *path* is a sidecar we may act on, else why not."""
    folder = os.path.dirname(path)
    try:
        info = os.lstat(folder)
    except OSError as exc:
        return "sidecar folder: %s" % exc.strerror
    if not _is_dir(info) or info.st_uid != os.geteuid():
        return "sidecar folder is a link, not a folder, or not ours"
    try:
        data, owner = st.read_regular(path, st.MAX_JSON_BYTES + 1)
    except OSError as exc:
        return "sidecar: %s" % exc.strerror
    except ValueError:
        return "sidecar is not a regular file"
    if owner != os.geteuid():
        return "sidecar belongs to uid %d, not us" % owner
    try:
        if len(data) > st.MAX_JSON_BYTES:
            raise ValueError("larger than %d bytes" % st.MAX_JSON_BYTES)
        if not isinstance(st.parse_json(data.decode("utf-8")), dict):
            return "sidecar is not a JSON object"
    except ValueError as exc:
        return "sidecar is not JSON: %s" % exc
    return None


def _is_dir(info):
    return (info.st_mode & 0o170000) == 0o040000


def ensure_dir(path):
    try:
        os.makedirs(path, 0o700, exist_ok=True)
        return True
    except OSError:
        return False


def start(st, cid, sidecar, root, init_pid):
    pid_path = st.pid_file(root, cid)
    if live_wrapper(st, pid_path, cid):
        log("createRuntime: a supervisor already runs; nothing done")
        return
    if not os.path.isfile(WRAPPER):
        log("createRuntime: %s is missing; no supervisor started; "
            "reinstall with 'terok-install install'" % WRAPPER)
        return
    pid = spawn_wrapper(st, cid, sidecar, root, init_pid)
    if pid is None:
        return
    try:
        write_pid_file(pid_path, pid)
    except OSError as exc:
        st.signal_group(pid, st.SIGKILL)
        log("createRuntime: cannot write %s (%s); supervisor %d killed"
            % (pid_path, exc.strerror, pid))
        return
    log("createRuntime: supervisor started, pid %d" % pid)


def live_wrapper(st, pid_path, cid):
    try:
        pgid, _ = st.read_pid_file(pid_path)
    except (OSError, ValueError):
        return False
    return st.running(pgid) and st.is_our_wrapper(pgid, cid, {WRAPPER_B})



def spawn_wrapper(st, cid, sidecar, root, init_pid):
    """Start the wrapper as leader of a new session; its pid, or None."""
    argv = [sys.executable, "-I", "-S", WRAPPER, cid, sidecar]
    if init_pid is not None:
        argv.append(str(init_pid))
    if not ensure_dir(os.path.join(root, "pids")):
        log("createRuntime: cannot create %s/pids; no supervisor started"
            % root)
        return None
    try:
        out = os.open(os.path.join(root, "logs", cid + ".log"),
                      os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                      | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log("createRuntime: cannot open the supervisor log (%s); "
            "no supervisor started" % exc.strerror)
        return None
    actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
               (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)]
    # Fds the runtime handed us must not live on in the supervisor: a
    # pipe held open there would stall whoever waits for its end.
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in inherited_fds(out)]
    try:
        return os.posix_spawn(sys.executable, argv, st.hardened_env(),
                              file_actions=actions, setsid=True)
    except OSError as exc:
        log("createRuntime: cannot start %s (%s)" % (argv[0], exc))
        return None
    finally:
        os.close(out)


def inherited_fds(keep):
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return []
    return [fd for fd in fds if fd > 2 and fd != keep and _is_open(fd)]


def _is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def write_pid_file(path, pid):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                     | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            data = b"%d\n" % pid
            # No fsync: after a crash the supervisor is gone too, and
            # this file sits on the critical path of every start.
            if os.write(fd, data) != len(data):
                raise OSError(28, "short write")
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        _unlink(tmp)
        raise


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def stop(st, cid, root):
    """End the container's supervisor group and its stray children."""
    pid_path = st.pid_file(root, cid)
    pgid = ours = None
    try:
        pgid, _ = st.read_pid_file(pid_path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log("poststop: bad pid file %s (%s); removed" % (pid_path, exc))
    if pgid is not None:
        ours = group_is_ours(st, pgid, cid)
    pids = st.list_pids()
    targets = st.group_members(pgid, pids) if ours else []
    strays = stray_children(st, cid, pids, set(targets))
    if ours:
        st.signal_group(pgid, st.SIGTERM)
    for pid in strays:
        _kill(pid, st.SIGTERM)
    left = st.wait_exited(targets + strays, GRACE_S)
    if left:
        if ours:
            st.signal_group(pgid, st.SIGKILL)
        for pid in strays:
            _kill(pid, st.SIGKILL)
        left = st.wait_exited(left, KILL_WAIT_S)
    _unlink(pid_path)
    log("poststop: %d supervisor process(es) and %d stray child(ren) "
        "ended%s" % (len(targets), len(strays),
                     "; %d still running" % len(left) if left else ""))


def group_is_ours(st, pgid, cid):
    """A live leader must be our wrapper for *cid*; a dead one left a
    remnant of our group (its pid cannot be reused while the group lives)."""
    if not st.running(pgid):
        return True
    if st.is_our_wrapper(pgid, cid, {WRAPPER_B}):
        return True
    log("poststop: pid %d is no supervisor of ours (recycled?); "
        "not signalled" % pgid)
    return False


def stray_children(st, cid, pids, skip):
    want = cid.encode()
    found = []
    for pid in pids:
        if pid in skip or pid == os.getpid():
            continue
        argv = st.read_argv(pid)
        if argv and st.child_container(argv) == want:
            found.append(pid)
    return found


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def run():
    sys.path.insert(0, HERE)
    try:
        main(sys.argv, sys.stdin.buffer)
    except BaseException as exc:  # noqa: B902 - the hook must exit 0
        log("internal error %s: %s; nothing more done"
            % (type(exc).__name__, exc))
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(0)


if __name__ == "__main__":
    run()
