"""Faults that must lose nothing: full disks, races, interruptions."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import CID, STAND_IN
from procfs import alive

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="mounting a tmpfs needs root")


@pytest.fixture
def tiny_disk(tmp_path):
    """A tmpfs of a few KiB, unmounted afterwards."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k,mode=0755",
                    "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(folder):
    """Write until the file system is full."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)


@needs_root
def test_full_disk_during_install_changes_nothing(terok, tiny_disk):
    terok.conf.parent.mkdir(parents=True)
    terok.conf.write_text("# operator\n")
    env = dict(terok.env, TEROK_SANDBOX_STATE_DIR=str(tiny_disk / "state"))
    proc = terok.cli("install", "--sandbox-bin", str(STAND_IN), env=env)
    assert proc.returncode == 1
    assert "No space left on device" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert terok.conf.read_text() == "# operator\n"
    assert not list(tiny_disk.glob("**/*.json"))
    assert not list(tiny_disk.glob("**/.*.tmp"))


@needs_root
def test_full_disk_during_pid_file_write(installed, tiny_disk):
    root = tiny_disk / "user"
    sidecar = installed.sidecar(root=root)
    for name in ("pids", "logs"):
        (root / name).mkdir()
    fill(tiny_disk)
    proc = installed.run_hook("createRuntime", installed.oci_state(sidecar))
    assert proc.returncode == 0
    assert b"cannot write" in proc.stderr and b"killed" in proc.stderr
    pid = int(proc.stderr.split(b"supervisor ")[-1].split()[0])
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid)
    assert not list((root / "pids").glob("*.pid"))


def test_installs_racing_each_other_converge(terok):
    terok.conf.parent.mkdir(parents=True)
    terok.conf.write_text('[engine]\nhooks_dir = ["/opt/gpu"]\n')
    for _ in range(5):
        procs = [subprocess.Popen(
            [sys.executable, "-m", "terok_install", verb,
             "--sandbox-bin", str(STAND_IN)] if verb == "install" else
            [sys.executable, "-m", "terok_install", verb],
            env=terok.env, stderr=subprocess.PIPE, cwd=terok.tmp)
            for verb in ("install", "install", "uninstall", "install")]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    terok.install()
    assert terok.conf.read_text().count(str(terok.hooks_dir)) == 1
    assert terok.cli("status").returncode == 0
    terok.cli("uninstall", check=True)
    assert terok.conf.read_text() == '[engine]\nhooks_dir = ["/opt/gpu"]\n'


def test_interrupted_installs_converge(terok, counts):
    """SIGKILL an install or uninstall at random points; a plain install
    repairs it and a plain uninstall puts the operator's file back."""
    original = '# operator\n[engine]\nevents_logger = "file"\n'
    terok.conf.parent.mkdir(parents=True)
    terok.conf.write_text(original)
    rng = random.Random(1234)
    kills = 0
    for round_ in range(16):
        verb = ["install", "--sandbox-bin", str(STAND_IN)] if round_ % 2 \
            else ["uninstall"]
        proc = subprocess.Popen([sys.executable, "-m", "terok_install",
                                 *verb], env=terok.env, cwd=terok.tmp,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.25))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        terok.install()
        assert terok.cli("status").returncode == 0
        assert terok.conf.read_text().count(str(terok.hooks_dir)) == 1
    assert not list(terok.tmp.glob("**/.*.tmp"))
    counts.append("interrupted: %d of 16 installs and uninstalls SIGKILLed "
                  "mid-way, each repaired by one install" % kills)
    terok.cli("uninstall", check=True)
    assert terok.conf.read_text() == original


@contextlib.contextmanager
def unwritable(folder):
    """*folder* exists and nobody may write it: root ignores file modes, so
    for root it is a read-only tmpfs."""
    folder.mkdir(parents=True)
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16k",
                        "tmpfs", str(folder)], check=True)
    else:
        os.chmod(folder, 0o555)
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)
        else:
            os.chmod(folder, 0o755)


def test_unwritable_containers_conf_folder_rolls_back(terok):
    """The descriptors are written before the registration fails, so the
    failed first install must take them away again."""
    with unwritable(terok.conf.parent):
        proc = terok.cli("install", "--sandbox-bin", str(STAND_IN))
    assert proc.returncode == 1
    assert str(terok.conf) in proc.stderr and "Traceback" not in proc.stderr
    assert not list(terok.tmp.glob("**/*.json"))
    assert not terok.state_root.exists()
    assert not terok.record.parent.exists()


def test_deleted_state_root_is_reported_and_repaired(installed):
    import shutil
    shutil.rmtree(installed.state_root)
    proc = installed.cli("status")
    assert proc.returncode == 1 and "missing" in proc.stdout
    installed.install()
    assert installed.cli("status").returncode == 0
    assert installed.run_hook("createRuntime", installed.oci_state(
        installed.sidecar())).returncode == 0
    assert installed.standin_record()["argv"][2] == CID


def test_record_of_another_version_is_a_clear_error(installed):
    installed.record.write_text(json.dumps({"installs": 3}))
    proc = installed.cli("uninstall")
    assert proc.returncode == 1
    assert str(installed.record) in proc.stderr
    assert "move it aside" in proc.stderr
    assert (installed.hooks_dir / "supervisor_hook.py").exists()
