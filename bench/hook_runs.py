"""The installed hook pair, run exactly as its descriptors say.

Supervisor trees come from the stand-in runtime: the createRuntime hook
starts the real wrapper, which starts the stand-in. Only the hook process
is timed; what it leaves behind is killed and reaped between runs.
"""

import ast
import json
import os
import secrets
import signal

import procs
import timing
from table import check, timed
from timing import Failed

ANNOTATION = "terok.sandbox.sidecar"
STAGES = ("createRuntime", "poststop")
DESCRIPTOR = "terok-sandbox-supervisor-%s.json"
HOOK_SCRIPT = "supervisor_hook.py"


def new_cid():
    return secrets.token_hex(32)


def constant(path, name):
    """A numeric literal assigned to *name* at the top of a script."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise Failed("%s sets no %s" % (path, name))


class Hook:
    """The installed descriptors, and a root for sidecars, pids and logs."""

    def __init__(self, hooks_dir, user_root, tmp):
        self.hooks = {}
        for stage in STAGES:
            with open(os.path.join(hooks_dir, DESCRIPTOR % stage)) as f:
                self.hooks[stage] = json.load(f)["hook"]
        self.script = next(a for a in self.hooks["poststop"]["args"]
                           if a.endswith(HOOK_SCRIPT))
        self.root = user_root
        self.stdin = os.path.join(tmp, "oci-state.json")
        self.out = os.path.join(tmp, "hook.out")
        for folder in ("sidecar", "pids", "logs"):
            os.makedirs(os.path.join(user_root, folder), exist_ok=True)

    def command(self, stage, cid, sidecar, pid=None):
        """(path, argv, env) of the hook for *stage*, its stdin written."""
        hook = self.hooks[stage]
        state = {"ociVersion": "1.0.2", "id": cid, "bundle": "/nowhere",
                 "status": "creating" if stage == STAGES[0] else "stopped",
                 "annotations": {ANNOTATION: sidecar}}
        if pid is not None:
            state["pid"] = pid
        with open(self.stdin, "w") as f:
            json.dump(state, f)
        open(self.out, "w").close()
        env = dict(e.split("=", 1) for e in hook.get("env", []))
        return hook["path"], hook["args"], env

    def run(self, stage, cid, sidecar, pid=None):
        """Seconds the hook took for *stage*; Failed unless it exited 0."""
        path, argv, env = self.command(stage, cid, sidecar, pid)
        seconds, code = timing.run(path, argv, env, stdin=self.stdin,
                                   out=self.out)
        if code != 0:
            raise Failed("%s hook exited %d: %s" % (stage, code, self.said()))
        return seconds

    def said(self):
        with open(self.out, errors="replace") as f:
            lines = f.read().strip().splitlines()
        return lines[-1] if lines else "(nothing on stderr)"

    def sidecar(self, cid, steer):
        path = os.path.join(self.root, "sidecar", cid + ".json")
        with open(path, "w") as f:
            json.dump({"standin": steer}, f)
        return path

    def pid_file(self, cid):
        return os.path.join(self.root, "pids", "supervisor-%s.pid" % cid)

    def pgid(self, cid):
        try:
            with open(self.pid_file(cid)) as f:
                return int(f.read())
        except (OSError, ValueError):
            raise Failed("createRuntime wrote no pid file: %s"
                         % self.said()) from None

    def start(self, steer):
        """A running tree for a new container: (id, sidecar, its group)."""
        cid = new_cid()
        sidecar = self.sidecar(cid, steer)
        self.run("createRuntime", cid, sidecar, pid=os.getpid())
        return cid, sidecar, self.pgid(cid)

    def standin(self, cid):
        """What the stand-in recorded once it runs."""
        path = os.path.join(self.root, "standin", cid + ".json")
        procs.wait_until(lambda: os.path.exists(path), "the stand-in")
        with open(path) as f:
            return json.load(f)

    def forget(self, cid):
        for path in (self.pid_file(cid),
                     os.path.join(self.root, "sidecar", cid + ".json"),
                     os.path.join(self.root, "standin", cid + ".json")):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def create_once(hook):
    cid = new_cid()
    seconds = hook.run("createRuntime", cid, hook.sidecar(cid, {}),
                       pid=os.getpid())
    procs.kill_groups([hook.pgid(cid)])
    hook.forget(cid)
    return seconds


def reap_once(hook, steer):
    """Seconds of one poststop run against a tree that is fully up."""
    cid, sidecar, pgid = hook.start(steer)
    pid = hook.standin(cid)["pid"]
    if steer.get("ignore_term"):
        procs.wait_until(lambda: procs.sig_ignored(pid, signal.SIGTERM),
                         "the stand-in to ignore SIGTERM")
    tree = procs.members([pgid])
    try:
        seconds = hook.run("poststop", cid, sidecar)
    finally:
        left = [p for p in tree if procs.alive(p)]
        procs.kill_groups([pgid])
    if left:
        raise Failed("poststop left %d of %d processes running"
                     % (len(left), len(tree)))
    if os.path.exists(hook.pid_file(cid)):
        raise Failed("poststop left the pid file behind")
    hook.forget(cid)
    return seconds


def series(reps, once):
    once()
    return timing.interleave(reps, once)


def create_row(hook, reps):
    times, base = series(reps, lambda: create_once(hook))
    ratio = timing.median(times) / timing.median(base)
    return timed("createRuntime hook", times, base, "<= 3x bare",
                 check("x bare", ratio, 3.0),
                 "stand-in runtime; the wrapper's group is killed after "
                 "each run")


def cooperative_row(hook, reps, label="poststop reap, cooperative",
                    target="<= 4x bare", note=""):
    times, base = series(reps, lambda: reap_once(hook, {}))
    ratio = timing.median(times) / timing.median(base)
    return timed(label, times, base, target,
                 check("x bare", ratio, 4.0) if target != "report" else None,
                 note)


def stubborn_row(hook, reps):
    grace_s = constant(hook.script, "GRACE_S")
    wait_s = constant(hook.script, "KILL_WAIT_S")
    times, base = series(reps, lambda: reap_once(
        hook, {"ignore_term": True}))
    excess = (timing.median(times) - grace_s) / timing.median(base)
    return timed("poststop reap, stubborn", times, base,
                 "grace + 2x bare", check("(t - grace) / bare", excess, 2.0),
                 "GRACE_S = %g s and KILL_WAIT_S = %g s in the installed "
                 "hook" % (grace_s, wait_s))
