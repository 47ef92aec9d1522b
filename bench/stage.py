"""A world-readable copy of what the worker needs, with the hook installed,
and the worker started in namespaces of its own.

The copy lets the worker run as an unprivileged uid even when the
repository sits where only root may enter. The hook is installed from the
copied source by ``/usr/bin/python3``, as the .deb would, so descriptors
name the system interpreter; a copy of another tree (``--source``) can be
measured the same way.
"""

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile

from timing import PYTHON

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST = os.path.join(REPO, "dist")
TRUSTED_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TRUSTED_ENV = {"PATH": TRUSTED_PATH, "LANG": "C.UTF-8"}
DEPS = ("jinja2", "markupsafe", "tomlkit", "yaml")
UNSHARE = ["unshare", "--user", "--map-root-user", "--pid", "--fork",
           "--mount-proc"]
STOP_S = 15


def deps_python():
    """An interpreter that imports the installer's libraries, or None."""
    for python in (sys.executable, os.path.join(REPO, ".venv/bin/python")):
        if os.path.exists(python) and subprocess.run(
                [python, "-c", "import " + ", ".join(DEPS)],
                capture_output=True).returncode == 0:
            return python
    return None


def deps_dirs(python):
    """The package folders *python* imports the installer's libraries from."""
    code = ("import os, %s\nfor m in (%s): print(os.path.dirname(m.__file__))"
            % (", ".join(DEPS), ", ".join(DEPS)))
    return subprocess.run([python, "-c", code], capture_output=True,
                          text=True, check=True).stdout.split()


def worker_user():
    """(uid, gid) the worker runs as: ours, or nobody's when we are root."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


class Stage:
    """The copied tree: bench, source, stand-in, panic zip, installed hook;
    *source* holds terok_install/ and *dist* what build.sh made."""

    def __init__(self, source=REPO, dist=DIST):
        self.dist = dist
        self.dir = tempfile.mkdtemp(prefix="terok-bench-")
        os.chmod(self.dir, 0o755)
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        here = os.path.dirname(os.path.abspath(__file__))
        shutil.copytree(here, self.path("bench"), ignore=skip)
        shutil.copytree(os.path.join(source, "terok_install"),
                        self.path("lib", "terok_install"), ignore=skip)
        shutil.copytree(os.path.join(REPO, "tests", "stand_in"),
                        self.path("stand_in"), ignore=skip)
        self.panic_zip = self._copy_dist("terok-panic")
        self.work = self.path("work")
        os.mkdir(self.work)
        os.chown(self.work, *worker_user())
        self.hook_skip = self.install()
        _open_to_all(self.dir)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def _copy_dist(self, name):
        if not os.path.exists(os.path.join(self.dist, name)):
            return None
        os.makedirs(self.path("dist"), exist_ok=True)
        return shutil.copy2(os.path.join(self.dist, name), self.path("dist"))

    def install(self):
        """Copy the libraries in, install the hook; why not, if it failed."""
        python = deps_python()
        if python is None:
            return ("the installer needs jinja2, tomlkit and PyYAML: run "
                    "with .venv/bin/python or put them on PYTHONPATH")
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        for folder in deps_dirs(python):
            shutil.copytree(folder, self.path("lib", os.path.basename(
                folder)), ignore=skip)
        env = dict(TRUSTED_ENV, TEROK_SANDBOX_STATE_DIR=self.path("state"),
                   CONTAINERS_CONF=self.path("containers.conf"),
                   TEROK_INSTALL_RECORD=self.record,
                   TEROK_CONFIG_FILE=self.path("no-config.yml"),
                   HOME=self.path("home"), PYTHONPATH=self.path("lib"))
        done = subprocess.run(
            [PYTHON, "-m", "terok_install", "install", "-q", "--sandbox-bin",
             self.stand_in], env=env, cwd=self.dir, capture_output=True,
            text=True)
        if done.returncode != 0:
            return "terok-install install failed: %s" % done.stderr.strip()
        return None

    @property
    def stand_in(self):
        return self.path("stand_in", "terok-sandbox")

    @property
    def record(self):
        return self.path("record.json")

    def config(self, rows, quick, profile, isolated, py_spy=None):
        """Write the worker's configuration; its path."""
        cfg = {"rows": sorted(rows), "quick": quick, "profile": profile,
               "isolated": isolated, "py_spy": py_spy, "lib": self.path("lib"),
               "panic_zip": self.panic_zip, "record": self.record,
               "hooks_dir": None if self.hook_skip
               else self.path("state", "hooks"),
               "hook_skip": self.hook_skip}
        path = self.path("config.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        os.chmod(path, 0o644)
        return path

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def _open_to_all(top):
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, mode | (0o055 if mode & 0o111 else 0o044))


def _drop_privileges():
    """Popen arguments that make a root bench start the worker as nobody."""
    if os.geteuid() != 0:
        return {}
    uid, gid = worker_user()
    return {"user": uid, "group": gid, "extra_groups": []}


def can_isolate():
    """True if the worker's namespaces can be made here."""
    try:
        done = subprocess.run(UNSHARE + ["/bin/true"], capture_output=True,
                              **_drop_privileges())
    except OSError:
        return False
    return done.returncode == 0


def start_worker(stage, config, isolated):
    """The worker process, in a session of its own; rows on its stdout."""
    argv = [PYTHON, "-E", "-s", stage.path("bench", "worker.py"), config]
    return subprocess.Popen(
        (UNSHARE if isolated else []) + argv, cwd=stage.dir, text=True,
        env=dict(TRUSTED_ENV, TMPDIR=stage.work), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, start_new_session=True, **_drop_privileges())


def stop_worker(proc):
    """Ask the worker to clean up; kill its group if it will not."""
    if proc.poll() is None:
        # Its leader is not reaped yet, so the group number is still ours.
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
