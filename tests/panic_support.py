"""Supervisor trees, decoys, a fake /proc and a test user for terok-panic.

Real trees come from the installed hook run as its descriptor says, with
the stand-in runtime. Every process a test starts names the test's
tmp_path or a container id in its argv, so the fixtures can find and kill
what a failed test leaves behind. The fake /proc lets a test show what is
never signalled without any host process at stake: its kill function only
records calls and rewrites the fake stat files.
"""

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import REPO, wait_for
from procfs import alive, pids_mentioning

TEST_USER = "terok-panic-test"
SLEEP = "import sys, time; time.sleep(120)"
STAND_IN_DIR = REPO / "tests" / "stand_in"
FAKE_PID_BASE = 4_100_000  # high, valid, and never signalled for real


def new_cid():
    return secrets.token_hex(32)


def start_tree(t, steer=None, root=None):
    """Start a supervisor tree through the hook; its container id."""
    cid = new_cid()
    root = Path(root or t.state_root)
    sidecar = t.sidecar(cid + ".json", {"standin": steer or {}}, root=root)
    done = t.run_hook("createRuntime",
                      t.oci_state(sidecar, cid, pid=os.getpid()))
    assert done.returncode == 0, done.stderr
    return cid


def wait_tree(cid, children=0):
    """Wait until wrapper, supervisor and *children* run; their pids."""
    wait_for(lambda: len(pids_mentioning(cid)) == 2 + children, 20,
             "the tree of %s" % cid[:12])
    return pids_mentioning(cid)




def pid_file(root, cid):
    return Path(root) / "pids" / ("supervisor-%s.pid" % cid)


def write_pid_file(root, cid, content):
    path = pid_file(root, cid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


class Decoys:
    """Processes panic must leave alone, each in a session of its own."""

    def __init__(self, marker):
        self.marker = str(marker)
        self.procs = []

    def start(self, *argv, env=None, pipe=False):
        """Start *argv* (a sleeper by default) with the marker appended."""
        argv = list(argv or [sys.executable, "-c", SLEEP]) + [self.marker]
        proc = subprocess.Popen(
            argv, env=env, start_new_session=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe else subprocess.DEVNULL)
        self.procs.append(proc)
        if not pipe:
            wait_for(lambda: self.marker.encode() in _cmdline(proc.pid),
                     what="decoy %d" % proc.pid)
        return proc

    def close(self):
        for proc in self.procs:
            # An unreaped child keeps its pid, so its group is still ours.
            if proc.returncode is None:
                quietly(os.killpg, proc.pid, signal.SIGKILL)
            proc.wait()
            if proc.stdout:
                proc.stdout.close()


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read()
    except OSError:
        return b""


def quietly(func, *args):
    try:
        func(*args)
    except OSError:
        pass


def still_running(pids):
    return [p for p in pids if alive(p)]


# --- a fake /proc ------------------------------------------------------------

class FakeProc:
    """A /proc of cmdline and stat files, and a kill that edits them."""

    def __init__(self, folder):
        self.root = Path(folder)
        self.root.mkdir(parents=True, exist_ok=True)
        self.procs = {}
        self.calls = []
        self.deaf = set()
        self.denied = set()

    def add(self, pid, argv, pgid=None, state="S"):
        """A process; *argv* is a list of bytes, raw bytes, or None."""
        folder = self.root / str(pid)
        folder.mkdir(exist_ok=True)
        if argv is not None:
            raw = argv if isinstance(argv, bytes) else b"\0".join(argv) + b"\0"
            (folder / "cmdline").write_bytes(raw)
        self.procs[pid] = pgid if pgid is not None else pid
        self.set_state(pid, state)
        return pid

    def set_state(self, pid, state):
        # The command name holds ") (" on purpose: stat is parsed from the
        # last parenthesis.
        line = "%d (a) (b) %s 1 %d %d 0 -1\n" % (
            pid, state, self.procs[pid], self.procs[pid])
        (self.root / str(pid) / "stat").write_text(line)

    def state(self, pid):
        try:
            text = (self.root / str(pid) / "stat").read_text()
        except OSError:
            return None
        return text[text.rfind(")") + 2]

    def kill(self, pid, sig):
        self.calls.append((pid, sig, time.monotonic()))
        hit = [p for p, g in self.procs.items()
               if (g == -pid if pid < 0 else p == pid)
               and self.state(p) is not None]
        if not hit:
            raise ProcessLookupError(3, "No such process")
        if pid in self.denied:
            raise PermissionError(1, "Operation not permitted")
        for p in hit:
            if p not in self.deaf and self.state(p) != "Z":
                self.set_state(p, "Z")

    def signalled(self):
        return [call[0] for call in self.calls]


# --- a world-readable stage, a test user and the standalone zip --------------

class Stage:
    """A folder everyone can read: the package, the stand-in, the zip."""

    def __init__(self):
        self.path = Path(tempfile.mkdtemp(prefix="terok-panic-"))
        self.path.chmod(0o755)
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(STAND_IN_DIR, self.path / "stand_in", ignore=skip)
        self.stand_in = self.path / "stand_in" / "terok-sandbox"
        self.system = self.path / "system"
        self.record = self.path / "install-record.json"
        self.zip = self.path / "terok-panic"
        build_zip(self.zip)

    def install_env(self):
        return dict(os.environ, PYTHONPATH=str(REPO),
                    TEROK_SANDBOX_STATE_DIR=str(self.system),
                    CONTAINERS_CONF=str(self.path / "containers.conf"),
                    TEROK_INSTALL_RECORD=str(self.record))

    def install(self):
        """A system-wide style install into ``system/`` with the stand-in."""
        done = subprocess.run(
            [sys.executable, "-m", "terok_install", "install",
             "--sandbox-bin", str(self.stand_in)],
            env=self.install_env(), capture_output=True, text=True,
            timeout=60)
        assert done.returncode == 0, done.stderr
        return self.system

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


def build_zip(output):
    """terok-panic as the release builds it: a zip run with -I -S."""
    env = dict(os.environ, SOURCE_DATE_EPOCH="0")
    subprocess.run([sys.executable, str(REPO / "packaging" / "mkpanic.py"),
                    str(REPO), str(output)], env=env, check=True)


class Person:
    """Runs commands as the test user when we are root, else as ourselves."""

    def __init__(self, entry, python):
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.home = Path(entry.pw_dir)
        self.python = python

    def argv(self, argv):
        if self.uid == os.geteuid():
            return list(argv)
        return ["setpriv", "--reuid=%d" % self.uid, "--regid=%d" % self.gid,
                "--clear-groups", "--"] + list(argv)

    def run(self, argv, env=None, stdin=b""):
        base = {"PATH": "/usr/bin:/bin", "HOME": str(self.home)}
        return subprocess.run(self.argv(argv), env=dict(base, **(env or {})),
                              input=stdin, capture_output=True, timeout=60)

    def own(self, path):
        """Make *path* and everything below it ours."""
        for item in [Path(path), *Path(path).rglob("*")]:
            quietly(os.lchown, item, self.uid, self.gid)

    def start_tree(self, system, root, steer=None):
        """Run the system install's hook as this person; the container id."""
        cid = new_cid()
        sidecar = Path(root) / "sidecar" / (cid + ".json")
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        sidecar.write_text(json.dumps({"standin": steer or {}}))
        self.own(root)
        state = {"ociVersion": "1.0.2", "id": cid, "status": "creating",
                 "pid": os.getpid(), "bundle": "/x",
                 "annotations": {"terok.sandbox.sidecar": str(sidecar)}}
        hook = str(Path(system) / "hooks" / "supervisor_hook.py")
        done = self.run([self.python, "-I", "-S", hook, "createRuntime"],
                        stdin=json.dumps(state).encode())
        assert done.returncode == 0, done.stderr
        return cid


def person():
    """The test user (made if need be) when root, else ourselves; or why
    none can be had."""
    if os.geteuid() != 0:
        return Person(pwd.getpwuid(os.geteuid()), sys.executable), None
    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        if shutil.which("useradd") is None or shutil.which("setpriv") is None:
            return None, "useradd or setpriv is missing"
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh",
                        TEST_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(TEST_USER)
    # The hook starts the wrapper with its own interpreter, so that one must
    # be able to start itself again as the user.
    again = "import os, sys; os.execv(sys.executable, ['py', '-c', 'pass'])"
    for python in (sys.executable, "/usr/bin/python3"):
        someone = Person(entry, python)
        if someone.run([python, "-I", "-S", "-c", again]).returncode == 0:
            return someone, None
    return None, "no Python that %s may run" % TEST_USER
