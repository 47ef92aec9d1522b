"""The helper's wait for processes to exit, on real child processes.

The hook's poststop reap and terok-panic both rely on it: pidfds where the
kernel offers them, polling /proc where it does not.
"""

import os
import signal
import subprocess
import sys

import pytest

from conftest import REPO
from procfs import alive, zombie
from terok_install.hooks import _supervisor_state as st

SLEEP = ["/bin/sleep", "60"]


@pytest.fixture
def sleepers():
    """Start sleeping children; kill and reap whatever is left at the end."""
    started = []

    def start(count):
        pids = [os.posix_spawn(SLEEP[0], SLEEP, {}) for _ in range(count)]
        started.extend(pids)
        return pids

    yield start
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def kill(pids):
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def test_killed_processes_count_as_exited_while_zombies(sleepers):
    pids = sleepers(3)
    kill(pids)
    assert st.wait_exited(pids, 5) == []
    # Nobody has reaped them: the wait must not hang on a lazy parent.
    assert all(zombie(pid) for pid in pids)


def test_survivors_are_returned_at_the_deadline(sleepers):
    stay, go = sleepers(2)
    kill([go])
    assert st.wait_exited([stay, go], 0.2) == [stay]
    assert alive(stay)


def test_a_reaped_pid_is_gone(sleepers):
    pid, = sleepers(1)
    kill([pid])
    os.waitpid(pid, 0)
    assert st.wait_exited([pid], 5) == []


def test_more_processes_than_one_batch_of_pidfds(sleepers):
    pids = sleepers(st.PIDFD_BATCH + 5)
    stay = pids.pop(0)
    kill(pids)
    assert st.wait_exited(pids + [stay], 0.5) == [stay]


def test_without_pidfds_it_polls(sleepers, monkeypatch):
    """As on Python or kernels without pidfd_open."""
    monkeypatch.delattr(os, "pidfd_open")
    stay, go = sleepers(2)
    kill([go])
    assert st.wait_exited([stay, go], 0.3) == [stay]
    kill([stay])
    assert st.wait_exited([stay, go], 5) == []


# Runs out of file descriptors: neither a pidfd nor /proc can tell then,
# and a process that cannot be seen must never pass for one that ended.
NO_FDS = """
import os, resource, signal, sys
sys.path.insert(0, sys.argv[1])
from terok_install.hooks import _supervisor_state as st
sleep = ["/bin/sleep", "60"]
quiet = [(os.POSIX_SPAWN_CLOSE, 1), (os.POSIX_SPAWN_CLOSE, 2)]
stay, go = [os.posix_spawn(sleep[0], sleep, {}, file_actions=quiet)
            for _ in range(2)]
os.kill(go, signal.SIGKILL)
limits = resource.getrlimit(resource.RLIMIT_NOFILE)
lowest = os.dup(0)
os.close(lowest)
resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, limits[1]))
try:
    print(st.wait_exited([stay, go], 0.3) == [stay, go])
    print(st.running(stay), st.running(go))
finally:
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    os.kill(stay, signal.SIGKILL)
print(st.wait_exited([stay, go], 5) == [])
"""


def test_out_of_file_descriptors_nothing_passes_for_exited():
    done = subprocess.run([sys.executable, "-c", NO_FDS, str(REPO)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["True", "True True", "True"]
