"""terok-panic: SIGKILL every terok-sandbox supervisor on this host at once.

Targets come from pid files (``<root>/pids/supervisor-<id>.pid`` under each
state root we know of) and from argv: wrappers of a known install root and
``supervise-child`` processes that no pid file covers. A live leader named
by a pid file is signalled only if its argv is our wrapper for that very
container, as its pid may have been recycled; a dead or zombie leader means
the group is what is left of ours, since the kernel hands out no pid while a
group of that number lives. Root reaches every user's supervisors; a user
reaches their own.

It is an emergency stop, so it reads each process's stat at most once and
its argv only where no pid file accounts for it, signals each pid file's
group as soon as it is judged, looks for orphans while those groups die,
and then waits for all targets together. Zombies count as gone: an init
that reaps lazily must not make a finished group look alive. Only the
standard library and the hook helper are imported, because this module
also runs from a zip under ``python3 -I -S``; argparse and json load only
when a flag needs them.
"""

import os
import sys

from terok_install.hooks import _supervisor_state as st

KILL_WAIT_S = 1.0
PID_PREFIX = "supervisor-"
PID_SUFFIX = ".pid"
NO_ID = "?"
_GONE = ("Z", "X")
_FAST_FLAGS = {"--json": "json", "-q": "quiet", "--quiet": "quiet"}


class Target:
    """One row: a pid file or a container's orphans, and what befell it."""

    __slots__ = ("cid", "pid_file", "aimed", "groups", "pids", "refused",
                 "members", "notes", "error")

    def __init__(self, cid, pid_file=None, note=None):
        self.cid = cid
        self.pid_file = pid_file
        self.aimed = []  # (number, is a group): ours, not yet signalled
        self.groups = []  # signalled
        self.pids = []
        self.refused = []  # ours, but groups we must never signal
        self.members = []
        self.notes = [note] if note else []
        self.error = None

    def fail(self, why):
        if self.error is None:
            self.error = why

    @property
    def what(self):
        return self.error or "; ".join(self.notes)

    def as_dict(self):
        return {"container": self.cid, "error": self.error,
                "what": self.what}


class Scan:
    """What /proc said: each stat and argv read at most once, on demand."""

    def __init__(self, proc):
        self.proc = proc
        self.pids = st.list_pids(proc)
        self._me = os.getpid()
        self._stats = {}
        self._unreadable = {}
        self._argv = {}
        self._groups = None

    def stat(self, pid):
        """(state, pgid); None if gone or if /proc cannot tell (see why)."""
        if pid not in self._stats:
            try:
                self._stats[pid] = st.read_stat(pid, self.proc)
            except OSError as exc:
                self._stats[pid] = None
                self._unreadable[pid] = exc.strerror or str(exc)
        return self._stats[pid]

    def why_unreadable(self, pid):
        """Why /proc could not tell *pid*'s state, or None."""
        self.stat(pid)
        return self._unreadable.get(pid)

    def argv(self, pid):
        """*pid*'s argv as bytes; None for us, kernel threads and the gone."""
        if pid not in self._argv:
            self._argv[pid] = (st.read_argv(pid, self.proc)
                               if pid != self._me else None)
        return self._argv[pid]

    def alive(self, pid):
        stat = self.stat(pid)
        return stat is not None and stat[0] not in _GONE

    def members(self, pgid):
        """Running members of group *pgid* other than us, as first seen."""
        if self._groups is None:
            self._groups = {}
            for pid in self.pids:
                if pid != self._me and self.alive(pid):
                    self._groups.setdefault(self.stat(pid)[1], []).append(pid)
        return self._groups.get(pgid, [])

    def owner(self, pid):
        try:
            return os.stat("%s/%d" % (self.proc, pid)).st_uid
        except OSError:
            return None


# --- where supervisors are recorded ------------------------------------------

def known_roots(env, is_root):
    """(roots that may hold pid files, roots whose wrapper we recognise)."""
    home = env.get("HOME") or _own_home()
    mine = [st.env_state_root(env) or st.default_state_root(is_root, env,
                                                            home)]
    mine += st.recorded_roots(st.record_path(is_root, env, home))
    if is_root:
        mine += users_roots()
        return _unique(mine), _unique(mine)
    # A system-wide install runs our wrappers from its own root while the
    # pid files sit in ours.
    system = [st.default_state_root(True, {}, "/")]
    system += st.recorded_roots(st.record_path(True, {}, "/"))
    return _unique(mine), _unique(mine + system)


def users_roots():
    """Each user's default state root and the roots their record names."""
    import pwd
    roots = []
    for user in pwd.getpwall():
        if user.pw_dir.startswith("/") and user.pw_dir != "/":
            roots.append(st.default_state_root(user.pw_uid == 0, {},
                                               user.pw_dir))
            roots += user_recorded_roots(user.pw_dir)
    return roots


def user_recorded_roots(home):
    return st.recorded_roots(st.record_path(False, {}, home))


def _own_home():
    import pwd
    try:
        return pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        return "/"


def _unique(roots):
    return list(dict.fromkeys(os.path.abspath(r) for r in roots))


def wrapper_paths(roots):
    """Our wrapper's path in each root, as given and with links resolved."""
    paths = set()
    for root in roots:
        for form in (root, os.path.realpath(root)):
            paths.add(os.fsencode(os.path.join(form, st.WRAPPER_NAME)))
    return paths


def pid_file_targets(roots):
    """A target per pid file under *roots*, and one per unlistable folder."""
    targets = []
    for root in roots:
        folder = os.path.join(root, "pids")
        try:
            names = sorted(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            target = Target(NO_ID)
            target.fail("cannot list %s: %s" % (folder, exc.strerror))
            targets.append(target)
            continue
        targets += [Target(name[len(PID_PREFIX):-len(PID_SUFFIX)],
                           os.path.join(folder, name))
                    for name in names if name.startswith(PID_PREFIX)
                    and name.endswith(PID_SUFFIX)]
    return targets


def read_pid(path):
    """(process group, owner uid) that a pid file names."""
    return st.read_pid_file(path)


# --- what to kill ------------------------------------------------------------

def judge_pid_file(target, scan, wrappers):
    """Aim *target* at the group its pid file names, if that group is ours."""
    if not st.valid_container_id(target.cid):
        target.cid = NO_ID
        target.notes.append("pid file name carries no container id")
        return
    try:
        pgid, owner = read_pid(target.pid_file)
    except FileNotFoundError:
        target.pid_file = None
        target.notes.append("pid file removed meanwhile")
        return
    except (OSError, ValueError) as exc:
        target.notes.append("bad pid file (%s)" % _why(exc))
        return
    why = scan.why_unreadable(pgid)
    if why:
        target.fail("cannot read the state of pid %d (%s); not signalled"
                    % (pgid, why))
    elif scan.alive(pgid):
        judge_live_leader(target, pgid, scan, wrappers)
    elif owner != os.geteuid() and _foreign(scan, pgid, owner):
        target.fail("process group %d holds processes of users other than "
                    "uid %d, who owns its pid file; not signalled"
                    % (pgid, owner))
    else:
        target.aimed.append((pgid, True))


def judge_live_leader(target, pgid, scan, wrappers):
    argv = scan.argv(pgid)
    cid = target.cid.encode()
    if st.wrapper_container(argv, wrappers) == cid:
        target.aimed.append((pgid, scan.stat(pgid)[1] == pgid))
    elif st.wrapper_container(argv, _wrapper_like(argv)) == cid:
        # Ours in all likelihood, but from an install we cannot vouch for:
        # keep the pid file and say so rather than lose track of it.
        target.fail("pid %d runs a %s of no install root we know; not "
                    "signalled" % (pgid, st.WRAPPER_NAME))
    else:
        target.notes.append("pid %d is not this container's supervisor "
                            "(recycled?); not signalled" % pgid)


def _wrapper_like(argv):
    name = os.fsencode(st.WRAPPER_NAME)
    return {arg for arg in argv or () if os.path.basename(arg) == name}


def _foreign(scan, pgid, uid):
    return any(scan.owner(pid) not in (uid, None)
               for pid in scan.members(pgid))


def _why(exc):
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def orphan_targets(scan, wrappers, targets, is_root):
    """Targets for our wrappers and service children no pid file covers."""
    covered = {p for t in targets for p in t.groups + t.pids + t.refused}
    found = orphans(scan, wrappers, covered, is_root)
    leaders = {pid for pid, pgid, _ in found if pid == pgid}
    by_cid = {t.cid: t for t in targets if t.cid != NO_ID}
    new = []
    for pid, pgid, cid in found:
        if pid != pgid and pgid in leaders:
            continue
        target = by_cid.get(cid)
        if target is None:
            target = by_cid[cid] = Target(cid, note="no pid file")
            new.append(target)
        target.aimed.append((pid, pid == pgid))
    return new


def orphans(scan, wrappers, covered, is_root):
    """(pid, pgid, container id) of each of ours that runs uncovered.

    Only processes outside the covered groups have their argv read: the
    groups that pid files name hold most of the processes, and a stat
    read comes first anyway, for the members of what is killed.
    """
    uid = os.geteuid()
    found = []
    for pid in scan.pids:
        if pid <= 1 or pid in covered or not scan.alive(pid):
            continue
        pgid = scan.stat(pid)[1]
        if pgid in covered:
            continue
        argv = scan.argv(pid)
        cid = st.wrapper_container(argv, wrappers) or st.child_container(
            argv)
        if cid is not None and (is_root or scan.owner(pid) == uid):
            found.append((pid, pgid, _cid_text(cid)))
    return found


def _cid_text(raw):
    cid = raw.decode("ascii", "replace")
    return cid if st.valid_container_id(cid) else NO_ID


# --- killing -----------------------------------------------------------------

def strike(target, scan, kill):
    """Signal what *target* aims at, except what must never be signalled."""
    aimed, target.aimed = target.aimed, []
    for number, is_group in aimed:
        if is_group and (number <= 1 or number == os.getpgrp()):
            target.refused.append(number)
            target.fail("process group %d is terok-panic's own or the "
                        "system's; not signalled" % number)
        elif is_group:
            target.groups.append(number)
            target.members += scan.members(number)
            _send(target, kill, -number, "process group %d" % number)
        elif number > 1 and number != os.getpid():
            target.pids.append(number)
            if number not in target.members:
                target.members.append(number)
            _send(target, kill, number, "pid %d" % number)


def _send(target, kill, pid, what):
    try:
        kill(pid, st.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        target.fail("not permitted to signal %s (EPERM)" % what)
    except OSError as exc:
        target.fail("cannot signal %s: %s" % (what, exc.strerror))


def settle(targets, proc):
    """Wait for every target's members together; fail those that survive."""
    members = sorted({p for t in targets for p in t.members})
    left = set(st.wait_exited(members, KILL_WAIT_S, proc))
    for target in targets:
        alive = [p for p in target.members if p in left]
        if alive:
            target.fail("%d process(es) still running after SIGKILL: %s"
                        % (len(alive), " ".join(map(str, alive))))
        killed = len(target.members) - len(alive)
        if killed:
            target.notes.insert(0, "killed %d process(es)" % killed)
        elif target.groups or target.pids:
            target.notes.insert(0, "nothing left running")


def remove_pid_file(target):
    """Remove the pid file unless something it names may still run."""
    if target.pid_file is None or target.error:
        return
    try:
        os.unlink(target.pid_file)
        target.notes.append("pid file removed")
    except FileNotFoundError:
        pass
    except OSError as exc:
        target.notes.append("cannot remove %s: %s"
                            % (target.pid_file, exc.strerror))


def sweep(proc=st.PROC, state_roots=None, kill=os.kill):
    """Kill every supervisor target; the targets with what befell them."""
    is_root = st.real_root(proc)
    if state_roots is None:
        pid_roots, known = known_roots(os.environ, is_root)
    else:
        pid_roots = known = _unique(state_roots)
    wrappers = wrapper_paths(known)
    targets = pid_file_targets(pid_roots)
    scan = Scan(proc)
    for target in targets:
        if target.pid_file:
            judge_pid_file(target, scan, wrappers)
        strike(target, scan, kill)
    # Orphans are looked for while the groups that pid files name die.
    targets += orphan_targets(scan, wrappers, targets, is_root)
    for target in targets:
        strike(target, scan, kill)
    settle(targets, proc)
    for target in targets:
        remove_pid_file(target)
    return targets


def kill_all_supervisors(*, proc=st.PROC, state_roots=None, kill=os.kill):
    """SIGKILL every supervisor group: (container id, why it failed or None).

    *proc*, *state_roots* and *kill* (called like os.kill; a negative pid
    names a group) are there for tests; by default they are the host's.
    """
    return [(t.cid, t.error) for t in sweep(proc, state_roots, kill)]


# --- command line ------------------------------------------------------------

def parse_args(argv):
    """{"json": bool, "quiet": bool} from the command line."""
    # argparse costs about as much as the interpreter's own start, so the
    # flags an emergency needs are read without it.
    if all(arg in _FAST_FLAGS for arg in argv):
        given = {_FAST_FLAGS[arg] for arg in argv}
        return {"json": "json" in given, "quiet": "quiet" in given}
    return vars(build_parser().parse_args(argv))


def build_parser():
    import argparse
    parser = argparse.ArgumentParser(
        prog="terok-panic",
        description="SIGKILL every terok-sandbox supervisor on this host. "
        "Exit 0 when nothing of them is left running, 1 otherwise.")
    parser.add_argument("--version", action="version",
                        version="%(prog)s " + version())
    parser.add_argument("--json", action="store_true",
                        help="print the rows as a JSON list of objects")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only what could not be killed")
    return parser


def version():
    import terok_install
    return getattr(terok_install, "__version__", "unknown")


def report(targets, as_json, quiet, out):
    shown = [t for t in targets if t.error or not quiet]
    if as_json:
        import json
        out.write(json.dumps([t.as_dict() for t in shown], indent=2) + "\n")
        return
    for target in shown:
        out.write("%s  %s%s\n" % (target.cid,
                                  "FAILED: " if target.error else "",
                                  target.what))
    if not quiet:
        out.write(summary(targets) + "\n")


def summary(targets):
    failed = sum(1 for t in targets if t.error)
    if not targets:
        return "terok-panic: no supervisor found"
    if failed:
        return ("terok-panic: %d of %d target(s) may still run; see the "
                "FAILED lines, and run terok-panic again as root for "
                "other users' supervisors" % (failed, len(targets)))
    return ("terok-panic: %d target(s) handled, none left running"
            % len(targets))


def main(argv=None):
    """Run terok-panic; the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    targets = sweep()
    report(targets, args["json"], args["quiet"], sys.stdout)
    sys.stdout.flush()
    return 1 if any(t.error for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
