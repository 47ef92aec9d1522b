"""The rows that start processes: the hook pair and terok-panic.

run.py starts this as PID 1 of a fresh PID namespace, as root of a user
namespace mapped to an unprivileged uid, so panic sees only what the bench
started and nothing of it can outlive the bench. Rows go to stdout as one
JSON object per line; progress goes to stderr.

Usage: worker.py CONFIG.json
"""

import contextlib
import json
import os
import signal
import sys
import tempfile

import hook_runs
import panic_runs
import profiling
import table
import timing
import trees
from table import skipped, timed
from timing import Failed

CROWD = 5000
# (full, --quick) repetitions per row
REPS = {"create": (31, 7), "poststop": (31, 7), "stubborn": (7, 3),
        "busy": (11, 5), "panic": (15, 5), "panic-1000": (5, 1),
        "real": (7, 3)}


class Worker:
    """The rows the configuration asks for, measured in a fixed order."""

    def __init__(self, cfg, tmp, closers):
        self.cfg, self.tmp, self.closers = cfg, tmp, closers
        self.wanted = set(cfg["rows"])
        self.hook = None
        if cfg.get("hooks_dir"):
            self.hook = hook_runs.Hook(cfg["hooks_dir"],
                                       os.path.join(tmp, "user"), tmp)
        self.panics = panic_runs.commands(cfg)
        self.scene = None

    def reps(self, kind):
        return REPS[kind][1 if self.cfg["quick"] else 0]

    def rows(self):
        yield from self.hook_rows()
        quiet = yield from self.panic_rows()
        if quiet or ("poststop" in self.wanted and self.hook):
            yield from self.busy_rows(quiet)
        if self.cfg.get("profile"):
            yield from profiling.worker_sections(self)

    def hook_rows(self):
        runs = [("create", "createRuntime hook",
                 lambda: hook_runs.create_row(self.hook, self.reps("create"))),
                ("poststop", "poststop reap, cooperative",
                 lambda: hook_runs.cooperative_row(self.hook,
                                                   self.reps("poststop"))),
                ("stubborn", "poststop reap, stubborn",
                 lambda: hook_runs.stubborn_row(self.hook,
                                                self.reps("stubborn")))]
        for key, label, make in runs:
            if key in self.wanted:
                yield self.hook_or_skip(label, make)

    def hook_or_skip(self, label, make):
        if self.hook is None:
            return skipped(label, self.cfg["hook_skip"])
        return attempt(label, make)

    def panic_rows(self):
        if "panic" not in self.wanted:
            return None
        why = self.panic_skip()
        if why:
            yield panic_runs.no_panic(why)
            return None
        self.scene = panic_runs.Scene(self.forest(), self.tmp)
        first = self.panics[0]
        try:
            rows, quiet = panic_runs.size_rows(self.scene, first,
                                               self.panic_reps)
        except Failed as exc:
            yield panic_runs.no_panic(str(exc))
            return None
        yield from rows
        for other in self.panics[1:] + [panic_runs.floor()]:
            yield attempt("terok-panic (%s)" % other.name,
                          lambda: self.one_size(other, 40))
        yield self.hook_or_skip("terok-panic, real trees",
                                lambda: panic_runs.real_tree_row(
                                    self.hook, first, self.cfg, self.tmp,
                                    self.reps("real")))
        return quiet

    def panic_skip(self):
        if not self.panics:
            return ("neither dist/terok-panic nor terok_install/panic.py "
                    "is there")
        if not self.cfg["isolated"] and os.geteuid() == 0:
            return ("no private PID namespace (unshare failed), and as "
                    "root panic would reach every user's supervisors")
        return None

    def forest(self):
        forest = trees.Forest(os.path.join(self.tmp, "panic-root"))
        self.closers.callback(forest.close)
        return forest

    def panic_reps(self, count):
        return self.reps("panic-1000" if count >= 1000 else "panic")

    def one_size(self, panic, count, crowd=0):
        times, base = timing.interleave(
            self.reps("panic"), lambda: self.scene.once(panic, count))
        return timed(panic_runs.label(panic, count, crowd), times, base)

    def busy_rows(self, quiet):
        say("starting %d unrelated processes" % CROWD)
        crowd = trees.Crowd(CROWD // 2)
        try:
            half = None
            if quiet:
                row = attempt("terok-panic, +%d processes" % crowd.count,
                              lambda: self.one_size(self.panics[0], 40,
                                                    crowd.count))
                yield row
                half = row.get("median_s")
            crowd.grow(CROWD - crowd.count)
            if "poststop" in self.wanted:
                yield self.hook_or_skip(
                    "poststop reap, cooperative, +%d processes" % CROWD,
                    lambda: hook_runs.cooperative_row(
                        self.hook, self.reps("busy"),
                        "poststop reap, cooperative, +%d processes" % CROWD,
                        "report"))
            if quiet:
                rows, _ = panic_runs.size_rows(
                    self.scene, self.panics[0], self.panic_reps, CROWD,
                    quiet, half)
                yield from rows
        finally:
            crowd.close()


def attempt(label, make):
    """The row *make* measures, or a skipped row saying what failed."""
    try:
        return make()
    except Failed as exc:
        return skipped(label, str(exc))


def say(text):
    sys.stderr.write("bench: %s\n" % text)
    sys.stderr.flush()


def emit(row):
    if table.progress(row):
        say(table.progress(row))
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()


def main(argv):
    with open(argv[1]) as f:
        cfg = json.load(f)
    # As PID 1 of its namespace the worker receives only the signals it
    # handles, and a SIGINT ignored by whoever started the bench stays so.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.ExitStack() as closers:
        tmp = closers.enter_context(tempfile.TemporaryDirectory(
            prefix="terok-bench-worker-"))
        closers.callback(timing.reap)
        for row in Worker(cfg, tmp, closers).rows():
            emit(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
