"""Look at and end the process groups the bench started."""

import os
import signal
import time

from timing import Failed, reap

GONE_S = 10.0


def state(pid):
    """(state letter, process group) of *pid*, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return fields[0].decode(), int(fields[2])


def alive(pid):
    """True while *pid* runs; a zombie has exited."""
    found = state(pid)
    return found is not None and found[0] not in ("Z", "X")


def members(pgids):
    """Running pids whose process group is one of *pgids*."""
    pgids = set(pgids)
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            found_state = state(int(name))
            if found_state and found_state[0] not in ("Z", "X") \
                    and found_state[1] in pgids:
                found.append(int(name))
    return found


def wait_gone(pids, timeout_s=GONE_S):
    """Reap and wait until none of *pids* runs; those left, if any."""
    deadline = time.monotonic() + timeout_s
    left = list(pids)
    while left:
        reap()
        left = [p for p in left if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.001)
    return left


def kill_groups(pgids):
    """SIGKILL each group and wait until all of their members are gone."""
    pgids = [g for g in pgids if g > 1]
    before = members(pgids)
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if wait_gone(before):
        raise Failed("process groups %s outlived SIGKILL" % pgids)


def sig_ignored(pid, signum):
    """True once *pid* ignores *signum* (its SigIgn mask says so)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigIgn:"):
                    return bool(int(line.split()[1], 16)
                                & (1 << (signum - 1)))
    except OSError:
        pass
    return False


def wait_until(predicate, what, timeout_s=GONE_S):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise Failed("timed out waiting for %s" % what)
        reap()
        time.sleep(0.002)
