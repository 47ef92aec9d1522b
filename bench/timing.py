"""Time child processes, and the bare interpreter between them.

Every run, subject or baseline, is started the same way (``posix_spawn``
with stdin and stdout opened in the child) and ends when ``waitpid``
returns it. The wait reaps any other child that exits meanwhile, so the
bench can act as the init of a PID namespace without stealing the status
of the run it times.
"""

import os
import statistics
import time

PYTHON = "/usr/bin/python3"
BARE = [PYTHON, "-I", "-S", "-c", "pass"]
_OUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND


def spawn(path, argv, env, stdin=os.devnull, out=os.devnull, setsid=False):
    """Start *argv* from *path*; stdout and stderr both go to *out*."""
    actions = [(os.POSIX_SPAWN_OPEN, 0, stdin, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, out, _OUT_FLAGS, 0o600),
               (os.POSIX_SPAWN_DUP2, 1, 2)]
    return os.posix_spawn(path, argv, env, file_actions=actions,
                          setsid=setsid)


def wait(pid):
    """The exit code of *pid*, reaping whatever else exits first."""
    while True:
        done, status = os.waitpid(-1, 0)
        if done == pid:
            return os.waitstatus_to_exitcode(status)


def reap():
    """Reap every child that has exited, without blocking."""
    while True:
        try:
            done, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if done == 0:
            return


def run(path, argv, env, **kw):
    """(seconds, exit code) of one run of *argv*."""
    start = time.perf_counter()
    pid = spawn(path, argv, env, **kw)
    code = wait(pid)
    return time.perf_counter() - start, code


def bare():
    return run(PYTHON, BARE, {})[0]


def interleave(reps, subject):
    """Time *subject* and the bare interpreter in turns; both lists.

    The order flips every round so that neither side always runs right
    after the other's leftovers.
    """
    times, base = [], []
    for i in range(reps):
        if i % 2:
            times.append(subject())
        base.append(bare())
        if not i % 2:
            times.append(subject())
    return times, base


def in_turns(reps, subjects):
    """Time several subjects and the bare interpreter round by round.

    A list of times per subject, then the bare times. The order rotates
    every round, so that slow spells of the machine (writeback of what
    earlier rows left, say) fall on each subject alike.
    """
    runs = list(subjects) + [bare]
    times = [[] for _ in runs]
    for i in range(reps):
        for k in range(len(runs)):
            j = (i + k) % len(runs)
            times[j].append(runs[j]())
    return times[:-1], times[-1]


def median(values):
    return statistics.median(values) if values else None


class Failed(Exception):
    """A run did not do what the row measures; the row is skipped."""
