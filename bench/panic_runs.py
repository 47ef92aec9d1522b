"""terok-panic against 1 to 1000 live trees, on a quiet and a busy host.

Each run gets fresh trees and must leave none of them running and no pid
file behind; only the panic process is timed.
"""

import json
import os
import shlex

import procs
import timing
from table import check, skipped, timed
from timing import Failed

SIZES = (1, 10, 40, 100, 1000)
TRUSTED_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
REAL_TREES = 10
# The least any killer does: read the pid files, SIGKILL each group, remove
# the file, wait until no member runs. No guards, no /proc argv, no output.
FLOOR = r"""
import os, time
pids = os.path.join(os.environ["TEROK_SANDBOX_STATE_DIR"], "pids")
groups = set()
for name in os.listdir(pids):
    path = os.path.join(pids, name)
    with open(path) as f:
        pgid = int(f.read())
    os.killpg(pgid, 9)
    os.unlink(path)
    groups.add(pgid)
def running():
    for name in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in (b"Z", b"X") and int(fields[2]) in groups:
            return True
    return False
while running():
    time.sleep(0.0002)
"""


class Panic:
    """One way to start terok-panic: the zip through its shebang line, or
    the module. *args* are what follows the interpreter."""

    def __init__(self, name, args, env=None, script=None, title=None):
        self.name, self.args, self.script = name, args, script
        self.env = env or {}
        self.title = title

    def argv(self, flags=()):
        return [timing.PYTHON, *flags, *self.args]

    def environ(self, root, record, home):
        return dict(self.env, PATH=TRUSTED_PATH, HOME=home,
                    TEROK_SANDBOX_STATE_DIR=root, TEROK_INSTALL_RECORD=record)

    def run(self, root, record, home, out):
        env = self.environ(root, record, home)
        if self.script:
            seconds, code = timing.run(self.script, [self.script], env,
                                       out=out)
        else:
            seconds, code = timing.run(timing.PYTHON, self.argv(), env,
                                       out=out)
        if code != 0:
            with open(out, errors="replace") as f:
                raise Failed("%s exited %d: %s" % (self.name, code,
                                                   f.read()[-300:]))
        return seconds


def commands(stage):
    """The ways to run panic that this stage has, the shipped one first."""
    found = []
    zip_path = stage.get("panic_zip")
    if zip_path:
        found.append(Panic("dist/terok-panic", launcher_args(zip_path),
                           script=zip_path))
    lib = stage["lib"]
    if os.path.exists(os.path.join(lib, "terok_install", "panic.py")):
        found.append(Panic("python -m terok_install.panic",
                           ["-S", "-m", "terok_install.panic"],
                           {"PYTHONPATH": lib}))
    return found


def launcher_args(path):
    """What terok-panic's launcher passes the interpreter, so that profiles
    see the shipped path; a plain zip's ``-I -S`` otherwise."""
    with open(path, "rb") as f:
        head = f.read(4096).split(b"\n")
    words = shlex.split(head[1].decode("utf-8", "replace")) if (
        len(head) > 1 and head[0] == b"#!/bin/sh") else []
    if words[:2] != ["exec", timing.PYTHON] or "-c" not in words:
        return ["-I", "-S", path]
    code_at = words.index("-c") + 1
    return words[2:code_at + 1] + [path]


class Scene:
    """A state root of light trees, its install record and a home."""

    def __init__(self, forest, tmp):
        self.forest = forest
        self.record = os.path.join(tmp, "panic-record.json")
        self.home = os.path.join(tmp, "home")
        self.out = os.path.join(tmp, "panic.out")
        os.makedirs(self.home, exist_ok=True)
        with open(self.record, "w") as f:
            json.dump({"version": 1,
                       "installs": [{"state_root": forest.root}]}, f)

    def once(self, panic, count):
        self.forest.grow(count)
        try:
            seconds = panic.run(self.forest.root, self.record, self.home,
                                self.out)
            left = self.forest.survivors()
            files = self.forest.pid_files()
        finally:
            self.forest.clear()
        if left or files:
            raise Failed("%s left %d process(es) running and %d pid "
                         "file(s) of %d trees" % (panic.name, len(left),
                                                  len(files), count))
        return seconds


def floor():
    """The bare killer, to show what the kernel's part alone costs."""
    return Panic("bare killer", ["-I", "-S", "-c", FLOOR],
                 title="bare killer (pid files, killpg, wait)")


def label(panic, count, crowd):
    if panic.title:
        return "%s, %d trees" % (panic.title, count)
    text = "terok-panic, %d tree%s" % (count, "" if count == 1 else "s")
    if crowd:
        text += ", +%d processes" % crowd
    if panic.name != "dist/terok-panic":
        text += " (%s)" % panic.name
    return text


def size_rows(scene, panic, reps, crowd=0, quiet=None, half=None):
    """A row per tree count; *quiet* holds medians without the crowd and
    *half* the median at 40 trees with half of it."""
    scene.once(panic, 1)
    rows, medians = [], {}
    for count in SIZES:
        times, base = timing.interleave(reps(count),
                                        lambda: scene.once(panic, count))
        medians[count] = timing.median(times)
        rows.append(timed(label(panic, count, crowd), times, base))
    for row, count in zip(rows, SIZES):
        judge(row, count, medians, quiet)
    if quiet and half:
        judge_crowd(rows[SIZES.index(40)], medians[40], half, quiet[40],
                    crowd)
    return rows, medians


def judge(row, count, medians, quiet):
    per_tree = _per_tree(medians)
    notes = []
    if count > 1:
        notes.append("%.3f ms per tree beyond the first"
                     % (per_tree[count] * 1e3))
    if quiet:
        notes.append("+%.1f ms over the quiet host"
                     % ((medians[count] - quiet[count]) * 1e3))
    row["note"] = "; ".join(notes)
    if quiet:
        return
    if count == 40:
        row["target"] = "<= 4x bare"
        row["check"] = check("x bare", row["median_s"] / row["bare_s"], 4.0)
    if count == SIZES[-1] and per_tree[100] > 0:
        row["target"] = "linear"
        row["check"] = check("per-tree cost at 1000 / at 100",
                             per_tree[count] / per_tree[100], 1.5)


def judge_crowd(row, full, half, quiet, crowd):
    """Is panic's cost linear in the processes on the host?"""
    per_full = (full - quiet) / crowd
    per_half = (half - quiet) / (crowd // 2)
    row["note"] += "; %.1f us per process (%.1f us with %d)" % (
        per_full * 1e6, per_half * 1e6, crowd // 2)
    if per_half > 0:
        row["target"] = "linear in processes"
        row["check"] = check("per-process cost at %d / at %d"
                             % (crowd, crowd // 2), per_full / per_half, 1.5)


def _per_tree(medians):
    return {n: (medians[n] - medians[1]) / (n - 1) for n in medians if n > 1}


def real_tree_row(hook, panic, stage, tmp, reps):
    """Panic against trees the real hook started: wrapper and stand-in."""
    home = os.path.join(tmp, "home")
    out = os.path.join(tmp, "panic.out")

    def once():
        cids, groups = [], []
        for _ in range(REAL_TREES):
            cid, _, pgid = hook.start({})
            cids.append(cid)
            groups.append(pgid)
        for cid in cids:
            hook.standin(cid)
        seconds = panic.run(hook.root, stage["record"], home, out)
        left = procs.members(groups)
        procs.kill_groups(groups)
        files = [c for c in cids if os.path.exists(hook.pid_file(c))]
        for cid in cids:
            hook.forget(cid)
        if left or files:
            raise Failed("%s left %d process(es) and %d pid file(s)"
                         % (panic.name, len(left), len(files)))
        return seconds

    times, base = timing.interleave(reps, once)
    return timed("terok-panic, %d trees from the real hook" % REAL_TREES,
                 times, base, note="wrapper + stand-in per tree, started "
                 "by the createRuntime hook")


def no_panic(why):
    return skipped("terok-panic", why, "<= 4x bare at 40; linear")
