"""The installed hook and wrapper, run exactly as a descriptor says, with
real supervisor processes from the stand-in runtime."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import CID, STAND_IN, wait_for
from procfs import alive, group_pids, pids_mentioning


def start(t, sidecar, cid=CID, pid=None, **kw):
    """createRuntime; the test process stands in for the container's init."""
    pid = os.getpid() if pid is None else pid
    proc = t.run_hook("createRuntime", t.oci_state(sidecar, cid, pid=pid),
                      **kw)
    assert proc.returncode == 0, proc.stderr
    return proc


def stop(t, sidecar, cid=CID):
    proc = t.run_hook("poststop", t.oci_state(sidecar, cid, "poststop"))
    assert proc.returncode == 0, proc.stderr
    return proc


def supervisor_pgid(t, cid=CID):
    wait_for(t.pid_file(cid).exists, what="pid file")
    return int(t.pid_file(cid).read_text())


def test_create_runtime_starts_the_supervisor(installed):
    sidecar = installed.sidecar()
    start(installed, sidecar)
    pgid = supervisor_pgid(installed)
    record = installed.standin_record()
    assert record["argv"] == ["terok-sandbox", "supervisor", CID,
                              str(sidecar), str(os.getpid())]
    assert record["pgid"] == pgid
    assert os.getsid(pgid) == pgid, "the wrapper leads its own session"
    log = (installed.user_root / "logs" / "hook.log").read_text()
    assert "terok-hook[%s] createRuntime: supervisor started" % CID[:12] in log


def test_poststop_reaps_the_whole_tree(installed):
    sidecar = installed.sidecar(body={"standin": {"children": 2}})
    start(installed, sidecar)
    pgid = supervisor_pgid(installed)
    installed.standin_record()
    wait_for(lambda: len(group_pids(pgid)) == 4, what="4 processes")
    members = group_pids(pgid)
    stop(installed, sidecar)
    assert not [p for p in members if alive(p)]
    assert not installed.pid_file().exists()
    assert sidecar.exists()


def test_poststop_kills_a_supervisor_that_ignores_sigterm(installed):
    sidecar = installed.sidecar(body={"standin": {"ignore_term": True}})
    start(installed, sidecar)
    pgid = supervisor_pgid(installed)
    installed.standin_record()
    stop(installed, sidecar)
    assert group_pids(pgid) == []


def test_poststop_ends_stray_children_in_other_sessions(installed):
    sidecar = installed.sidecar(
        body={"standin": {"children": 2, "detach_children": True}})
    start(installed, sidecar)
    installed.standin_record()
    wait_for(lambda: len(pids_mentioning(CID, "supervise-child")) == 2,
             what="children")
    strays = pids_mentioning(CID, "supervise-child")
    stop(installed, sidecar)
    assert not [p for p in strays if alive(p)]


def test_poststop_never_signals_a_recycled_pid(installed):
    decoy = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        sidecar = installed.sidecar()
        installed.pid_file().parent.mkdir(parents=True)
        installed.pid_file().write_text("%d\n" % decoy.pid)
        proc = stop(installed, sidecar)
        assert b"not signalled" in proc.stderr
        assert alive(decoy.pid)
        assert not installed.pid_file().exists()
    finally:
        decoy.kill()
        decoy.wait()


@pytest.mark.parametrize("content", ["", "garbage", "0", "1", "-1", "99999999"])
def test_poststop_with_a_bad_pid_file_exits_zero(installed, content):
    sidecar = installed.sidecar()
    installed.pid_file().parent.mkdir(parents=True)
    installed.pid_file().write_text(content)
    stop(installed, sidecar)
    assert not installed.pid_file().exists()
    assert alive(1)


def test_second_create_runtime_spawns_nothing_more(installed):
    sidecar = installed.sidecar()
    start(installed, sidecar)
    pgid = supervisor_pgid(installed)
    proc = start(installed, sidecar)
    assert b"already runs" in proc.stderr
    assert int(installed.pid_file().read_text()) == pgid


def test_start_after_stop_spawns_a_fresh_supervisor(installed):
    sidecar = installed.sidecar()
    start(installed, sidecar)
    first = supervisor_pgid(installed)
    stop(installed, sidecar)
    start(installed, sidecar)
    second = supervisor_pgid(installed)
    assert second != first and alive(second)


def _symlink_to_outside(t):
    outside = t.tmp / "outside.json"
    outside.write_text("{}")
    link = t.user_root / "sidecar" / "link.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    return link


def _linked_folder(t):
    real = t.tmp / "real-sidecar"
    real.mkdir()
    (real / "c.json").write_text("{}")
    t.user_root.mkdir()
    (t.user_root / "sidecar").symlink_to(real)
    return t.user_root / "sidecar" / "c.json"


def _fifo(t):
    path = t.user_root / "sidecar" / "fifo.json"
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    return path


def _folder(t):
    path = t.user_root / "sidecar" / "dir.json"
    path.mkdir(parents=True)
    return path


BAD_SIDECARS = {
    "relative": lambda t: "user/sidecar/c.json",
    "dot-dot": lambda t: str(t.sidecar()).replace(
        "/sidecar/", "/sidecar/../sidecar/"),
    "not in sidecar/": lambda t: _write_at(t, "elsewhere/c.json", "{}"),
    "missing": lambda t: str(t.user_root / "sidecar" / "none.json"),
    "symlink out": _symlink_to_outside,
    "folder is a symlink": _linked_folder,
    "fifo": _fifo,
    "directory": _folder,
    "not JSON": lambda t: _write(t, "not json"),
    "JSON array": lambda t: _write(t, "[1, 2]"),
    "empty annotation": lambda t: "",
}


def _write_at(t, relative, text):
    path = t.user_root / relative
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def _write(t, text):
    path = t.sidecar()
    path.write_text(text)
    return path


@pytest.mark.parametrize("make", BAD_SIDECARS.values(),
                         ids=BAD_SIDECARS.keys())
def test_bad_sidecar_spawns_nothing(installed, make):
    sidecar = make(installed)
    proc = start(installed, sidecar)
    assert proc.stderr, "the refusal is logged"
    time.sleep(0.2)
    assert not list(installed.tmp.glob("**/pids/*.pid"))
    assert not list(installed.tmp.glob("**/standin/*.json"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_sidecar_of_another_user_spawns_nothing(installed):
    sidecar = installed.sidecar()
    os.chown(sidecar, 65534, 65534)
    proc = start(installed, sidecar)
    assert b"belongs to uid 65534" in proc.stderr
    assert not installed.pid_file().exists()


@pytest.mark.parametrize("stdin", [
    b"", b"{", b"[]", b"null", b'{"id": 5}', b'{"id": "-rf", "annotations":'
    b' {"terok.sandbox.sidecar": "/x/sidecar/y"}}', b"\xff\xfe",
    b'{"id": "abc", "annotations": []}', b"{" * 100000])
def test_hostile_oci_state_exits_zero(installed, stdin):
    for stage in ("createRuntime", "poststop"):
        proc = installed.run_hook(stage, stdin)
        assert proc.returncode == 0
        assert b"Traceback" not in proc.stderr


def test_runtime_environment_cannot_steer_the_hook(installed, tmp_path):
    fake = tmp_path / "fakebin"
    fake.mkdir()
    for name in ("python3", "terok-sandbox"):
        (fake / name).write_text("#!/bin/sh\ntouch %s/steered\n" % tmp_path)
        os.chmod(fake / name, 0o755)
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "_supervisor_state.py").write_text(
        "raise SystemExit(7)\n")
    sidecar = installed.sidecar()
    start(installed, sidecar, env_extra={
        "PATH": str(fake), "PYTHONPATH": str(tmp_path / "evil"),
        "LD_PRELOAD": "/nonexistent/libevil.so"})
    pgid = supervisor_pgid(installed)
    installed.standin_record()
    with open("/proc/%d/environ" % pgid, "rb") as f:
        env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if e)
    assert b"LD_PRELOAD" not in env and b"PYTHONPATH" not in env
    assert str(fake).encode() not in env[b"PATH"]
    assert not (tmp_path / "steered").exists()


def test_missing_helper_module_still_exits_zero(installed):
    (installed.hooks_dir / "_supervisor_state.py").unlink()
    proc = start(installed, installed.sidecar())
    assert b"cannot import the hook helper" in proc.stderr
    assert not installed.pid_file().exists()


def test_missing_wrapper_still_exits_zero(installed):
    (installed.state_root / "supervisor_wrapper.py").unlink()
    proc = start(installed, installed.sidecar())
    assert b"supervisor_wrapper.py is missing" in proc.stderr
    assert not installed.pid_file().exists()


def test_unwritable_pid_file_takes_the_supervisor_down(installed):
    sidecar = installed.sidecar()
    installed.pid_file().mkdir(parents=True)  # a folder where the file goes
    proc = start(installed, sidecar)
    assert b"supervisor" in proc.stderr and b"killed" in proc.stderr
    pid = int(proc.stderr.split(b"supervisor ")[-1].split()[0])
    wait_for(lambda: not alive(pid), 5, "the wrapper to die")


# --- the wrapper on its own ------------------------------------------------

def run_wrapper(t, *args, timeout=30):
    return subprocess.run(
        [sys.executable, "-I", "-S", str(t.state_root /
                                         "supervisor_wrapper.py"), *args],
        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args,message", [
    ([], "usage"),
    ([CID], "usage"),
    (["--help", "/x/sidecar/y.json"], "bad container id"),
    (["a b", "/x/sidecar/y.json"], "bad container id"),
    ([CID, "relative/y.json"], "not absolute"),
    ([CID, "/x/sidecar/y.json", "12x"], "not a number"),
])
def test_wrapper_refuses_bad_arguments(installed, args, message):
    proc = run_wrapper(installed, *args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_unrendered_wrapper_refuses(installed, tmp_path):
    from terok_install.artefacts import resource_bytes
    raw = resource_bytes("terok_install.templates", "supervisor_wrapper.py.j2")
    (installed.state_root / "supervisor_wrapper.py").write_bytes(raw)
    proc = run_wrapper(installed, CID, str(installed.sidecar()))
    assert proc.returncode == 2
    assert "never rendered" in proc.stderr


def test_wrapper_stops_when_the_supervisor_succeeds(installed):
    sidecar = installed.sidecar(body={"standin": {"exit": 0}})
    proc = run_wrapper(installed, CID, str(sidecar))
    assert proc.returncode == 0
    assert "supervisor finished" in proc.stdout


def test_wrapper_retries_with_backoff(installed):
    sidecar = installed.sidecar(body={"standin": {"exit": 3}})
    calls = installed.user_root / "standin" / "calls.log"
    wrapper = subprocess.Popen(
        [sys.executable, "-I", "-S", str(installed.state_root /
                                         "supervisor_wrapper.py"),
         CID, str(sidecar)], stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: calls.exists() and len(
            calls.read_text().splitlines()) == 2, 10, "a retry")
        time.sleep(0.3)
        assert len(calls.read_text().splitlines()) == 2, "waits 2 s next"
        wrapper.send_signal(signal.SIGTERM)
        out, _ = wrapper.communicate(timeout=10)
    finally:
        wrapper.kill()
    assert "retry in 1 s" in out and "stopped by SIGTERM" in out


def test_wrapper_exits_127_when_the_runtime_vanished(terok, tmp_path):
    runtime = tmp_path / "terok-sandbox"
    runtime.write_bytes(STAND_IN.read_bytes())
    os.chmod(runtime, 0o755)
    terok.cli("install", "--sandbox-bin", str(runtime), check=True)
    runtime.unlink()
    env = dict(os.environ, PATH="/nonexistent", HOME=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(terok.state_root /
                                         "supervisor_wrapper.py"),
         CID, str(terok.sidecar())], capture_output=True, text=True,
        env=env, timeout=30)
    assert proc.returncode == 127
    assert "no terok-sandbox found" in proc.stdout


def test_wrapper_finds_the_runtime_at_spawn_time(terok, tmp_path):
    env = dict(terok.env, PATH="/nonexistent", HOME=str(tmp_path))
    terok.cli("install", env=env, check=True)
    bindir = tmp_path / ".local" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "terok-sandbox").symlink_to(STAND_IN)
    sidecar = terok.sidecar(body={"standin": {"exit": 0}})
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(terok.state_root /
                                         "supervisor_wrapper.py"),
         CID, str(sidecar)], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=30)
    assert proc.returncode == 0, proc.stdout
    assert "found at spawn time" in proc.stdout
    assert json.loads((terok.user_root / "standin" / (CID + ".json"))
                      .read_text())["argv"][1] == "supervisor"


def test_no_supervisor_for_a_container_already_gone(installed):
    gone = subprocess.Popen(["true"])
    gone.wait()
    start(installed, installed.sidecar(), pid=gone.pid)
    pgid = supervisor_pgid(installed)
    wait_for(lambda: group_pids(pgid) == [], 10, "the wrapper to end")
    assert not (installed.user_root / "standin").exists()


def test_supervisor_ends_with_the_container_without_poststop(installed):
    """After an uninstall Podman may find no poststop script to run."""
    init = subprocess.Popen(["sleep", "60"])
    try:
        start(installed, installed.sidecar(), pid=init.pid)
        pgid = supervisor_pgid(installed)
        installed.standin_record()
        installed.cli("uninstall", check=True)
        init.kill()
        init.wait()
        wait_for(lambda: group_pids(pgid) == [], 10, "the group to end")
    finally:
        init.kill()
        init.wait()
