"""Cheap supervisor trees for terok-panic, and a crowd of bystanders.

A light tree is what panic looks for, at a fraction of the cost of the
real wrapper and stand-in: a session led by ``python3 -I -S
<root>/supervisor_wrapper.py <id> <sidecar>`` (the file there is a tiny
leader, not the rendered wrapper) with one ``sleep`` child, and a pid file
naming the leader. Leaders read a pipe the bench holds open and kill their
own group when it closes, so a bench that dies takes its trees along.
"""

import os
import secrets
import select
import signal

import procs
from timing import PYTHON, Failed

LEADER = b"""import os
os.posix_spawn("/bin/sleep", ["sleep", "3600"], {}, file_actions=[
    (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)])
os.write(1, b".")
os.close(1)
os.read(0, 1)
os.killpg(0, 9)
"""
READY_S = 120.0
BYSTANDER = ["/bin/sleep", "600"]
_QUIET = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0)
          for fd in (0, 1, 2)]


class Forest:
    """Light trees under one state root with its pid files."""

    def __init__(self, root):
        self.root = root
        self.wrapper = os.path.join(root, "supervisor_wrapper.py")
        for folder in ("pids", "sidecar"):
            os.makedirs(os.path.join(root, folder), exist_ok=True)
        with open(self.wrapper, "wb") as f:
            f.write(LEADER)
        self._life_r, self._life_w = os.pipe()
        self.leaders = []

    def grow(self, count):
        """Start *count* trees and wait until each has its child."""
        ready_r, ready_w = os.pipe()
        try:
            for _ in range(count):
                self.leaders.append(self._plant(ready_w))
        finally:
            os.close(ready_w)
        try:
            _read_exactly(ready_r, count)
        finally:
            os.close(ready_r)

    def _plant(self, ready_w):
        cid = secrets.token_hex(32)
        sidecar = os.path.join(self.root, "sidecar", cid + ".json")
        argv = [PYTHON, "-I", "-S", self.wrapper, cid, sidecar]
        actions = [(os.POSIX_SPAWN_DUP2, self._life_r, 0),
                   (os.POSIX_SPAWN_DUP2, ready_w, 1),
                   (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)]
        pid = os.posix_spawn(PYTHON, argv, {}, file_actions=actions,
                             setsid=True)
        with open(self.pid_file(cid), "w") as f:
            f.write("%d\n" % pid)
        return pid

    def pid_file(self, cid):
        return os.path.join(self.root, "pids", "supervisor-%s.pid" % cid)

    def survivors(self):
        """Members of our trees that still run."""
        return procs.members(self.leaders)

    def pid_files(self):
        return os.listdir(os.path.join(self.root, "pids"))

    def clear(self):
        """Kill what is left of the trees and drop their pid files."""
        procs.kill_groups(self.leaders)
        self.leaders = []
        for name in self.pid_files():
            os.unlink(os.path.join(self.root, "pids", name))

    def close(self):
        os.close(self._life_w)
        os.close(self._life_r)
        self.clear()


def _read_exactly(fd, count):
    got = 0
    while got < count:
        readable, _, _ = select.select([fd], [], [], READY_S)
        chunk = os.read(fd, count - got) if readable else b""
        if not chunk:
            raise Failed("only %d of %d trees came up" % (got, count))
        got += len(chunk)


class Crowd:
    """*count* unrelated ``sleep`` processes in one process group."""

    def __init__(self, count):
        self.pgid = 0
        self.count = 0
        self.grow(count)

    def grow(self, count):
        """Start *count* more."""
        for _ in range(count):
            pid = os.posix_spawn(BYSTANDER[0], BYSTANDER, {},
                                 file_actions=_QUIET, setpgroup=self.pgid)
            self.pgid = self.pgid or pid
        self.count += count

    def close(self):
        if self.pgid:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            procs.wait_gone(procs.members([self.pgid]))
            self.pgid = 0
