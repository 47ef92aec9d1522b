"""Shared fixtures: a hermetic terok environment in tmp_path, the CLI run
as a real child process, and the installed hook run the way Podman runs it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from procfs import pids_mentioning

REPO = Path(__file__).resolve().parent.parent
STAND_IN = REPO / "tests" / "stand_in" / "terok-sandbox"
CID = "0123456789abcdef" * 4


class Terok:
    """Paths and helpers for one hermetic install under tmp_path."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.state_root = tmp_path / "state"
        self.conf = tmp_path / "etc" / "containers.conf"
        self.record = tmp_path / "record" / "install-record.json"
        self.user_root = tmp_path / "user"
        self.env = dict(
            os.environ, TEROK_SANDBOX_STATE_DIR=str(self.state_root),
            CONTAINERS_CONF=str(self.conf),
            TEROK_INSTALL_RECORD=str(self.record),
            TEROK_CONFIG_FILE=str(tmp_path / "no-config.yml"),
            PYTHONPATH=str(REPO))
        for name in ("TEROK_ROOT", "TEROK_SANDBOX_BIN"):
            self.env.pop(name, None)

    @property
    def hooks_dir(self):
        return self.state_root / "hooks"

    def cli(self, *args, check=False, env=None):
        """Run ``python -m terok_install ARGS`` as a child process."""
        proc = subprocess.run(
            [sys.executable, "-m", "terok_install", *args],
            env=env or self.env, capture_output=True, text=True,
            cwd=self.tmp, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError("%s failed: %s" % (args, proc.stderr))
        return proc

    def install(self, *args):
        return self.cli("install", "--sandbox-bin", str(STAND_IN), *args,
                        check=True)

    def descriptor(self, stage, hooks_dir=None):
        folder = Path(hooks_dir) if hooks_dir else self.hooks_dir
        path = folder / ("terok-sandbox-supervisor-%s.json" % stage)
        return json.loads(path.read_text())

    def sidecar(self, name="c.json", body=None, root=None):
        folder = Path(root or self.user_root) / "sidecar"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text(json.dumps({} if body is None else body))
        return path

    def oci_state(self, sidecar, cid=CID, stage="createRuntime", pid=None):
        state = {"ociVersion": "1.0.2", "id": cid, "bundle": "/nowhere",
                 "status": "creating" if stage == "createRuntime"
                 else "stopped",
                 "annotations": {"terok.sandbox.sidecar": str(sidecar)}}
        if pid is not None:
            state["pid"] = pid
        return json.dumps(state).encode()

    def run_hook(self, stage, stdin, env_extra=None, hooks_dir=None):
        """Run the hook exactly as its descriptor says."""
        hook = self.descriptor(stage, hooks_dir)["hook"]
        env = dict(e.split("=", 1) for e in hook.get("env", []))
        env.update(env_extra or {})
        return subprocess.run(hook["args"], executable=hook["path"],
                              input=stdin, env=env, capture_output=True,
                              timeout=60)

    def pid_file(self, cid=CID, root=None):
        return Path(root or self.user_root) / "pids" / (
            "supervisor-%s.pid" % cid)

    def standin_record(self, cid=CID, root=None, timeout_s=10):
        path = Path(root or self.user_root) / "standin" / (cid + ".json")
        wait_for(path.exists, timeout_s)
        return json.loads(path.read_text())


def wait_for(predicate, timeout_s=10, what="condition"):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.02)


def kill_processes_mentioning(text):
    """SIGKILL every process whose argv names *text* (a test's tmp_path)."""
    for pid in pids_mentioning(text):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture
def terok(tmp_path):
    """A hermetic environment; kills every process that names tmp_path."""
    yield Terok(tmp_path)
    kill_processes_mentioning(tmp_path)


_COUNTS = []


@pytest.fixture(scope="session")
def counts():
    """Append a line here to have it printed in the run's summary."""
    return _COUNTS


def pytest_terminal_summary(terminalreporter):
    if _COUNTS:
        terminalreporter.section("what the suite tried")
        for line in _COUNTS:
            terminalreporter.write_line(line)


@pytest.fixture
def installed(terok):
    terok.install()
    return terok


# --- end-to-end Podman fixtures (tests/test_podman_e2e.py) -------------------

@pytest.fixture(scope="session")
def podman_user():
    """The rootless Podman test user with the busybox image, reset."""
    import podman_support
    reason = podman_support.skip_reason()
    if reason:
        pytest.skip(reason)
    user = podman_support.ensure_user()
    podman_support.ensure_image(user)
    user.reset()
    yield user
    user.reset()


@pytest.fixture(scope="session")
def user_tree(podman_user):
    """(lib folder, stand-in path) copied where the test user can read."""
    import podman_support
    with podman_support.staged_for_user() as tree:
        yield tree
