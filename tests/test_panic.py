"""terok-panic against real supervisor trees started through the installed
hook, and against a fake /proc for what it must never signal."""

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import panic_support as ps
from conftest import REPO, wait_for
from procfs import alive, zombie
from terok_install import panic
from terok_install.panic import kill_all_supervisors

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0,
                               reason="needs root to act as another user")
LEADER = ("import subprocess, sys; p = subprocess.Popen([sys.executable, "
          "'-c', %r, sys.argv[1]]); print(p.pid, flush=True)" % ps.SLEEP)


@pytest.fixture
def decoys(tmp_path):
    spared = ps.Decoys(tmp_path)
    yield spared
    spared.close()


@pytest.fixture(scope="module")
def stage():
    """The world-readable stage with a system-style install and the zip."""
    staged = ps.Stage()
    staged.install()
    yield staged
    staged.remove()


@pytest.fixture
def someone(stage):
    who, why = ps.person()
    if who is None:
        pytest.skip(why)
    made = []
    yield who, made
    for cid in made:
        for pid in ps.pids_mentioning(cid):
            ps.quietly(os.kill, pid, signal.SIGKILL)


def run_cli(t, *flags):
    return subprocess.run([sys.executable, "-m", "terok_install.panic",
                           *flags], env=t.env, capture_output=True,
                          text=True, timeout=60)


def run_main(t, monkeypatch, capsys, *flags):
    for name, value in t.env.items():
        monkeypatch.setenv(name, value)
    code = panic.main(list(flags))
    return code, capsys.readouterr().out


def plant_decoys(t, decoys):
    """Processes alike ours in argv or named by a pid file; their pids."""
    cid = ps.new_cid()
    sidecar = str(t.sidecar(cid + ".json", {}, root=t.state_root))
    elsewhere = t.tmp / "elsewhere" / "supervisor_wrapper.py"
    elsewhere.parent.mkdir()
    elsewhere.write_text(ps.SLEEP)
    stand_in = dict(os.environ, PYTHONPATH=str(ps.STAND_IN_DIR))
    procs = [
        decoys.start(),
        decoys.start(sys.executable, "-c", ps.SLEEP,
                     "supervise-child-notes.txt"),
        decoys.start(sys.executable, "-m", "terok_sandbox", "doctor",
                     "svc0", cid, sidecar, env=stand_in),
        decoys.start(sys.executable, str(elsewhere), cid, sidecar),
    ]
    recycled = decoys.start()
    ps.write_pid_file(t.state_root, ps.new_cid(), "%d\n" % recycled.pid)
    return [p.pid for p in procs + [recycled]]


# --- real trees --------------------------------------------------------------

def test_cli_kills_every_tree_and_spares_the_decoys(installed, decoys):
    steers = [{}, {"children": 2}, {"ignore_term": True, "children": 1},
              {"detach_children": True, "children": 2}]
    cids = [ps.start_tree(installed, steer) for steer in steers]
    trees = {cid: ps.wait_tree(cid, steer.get("children", 0))
             for cid, steer in zip(cids, steers)}
    spared = plant_decoys(installed, decoys)
    done = run_cli(installed)
    assert done.returncode == 0, done.stdout + done.stderr
    for cid, pids in trees.items():
        assert ps.still_running(pids) == [], cid
        assert not ps.pid_file(installed.state_root, cid).exists()
        assert "%s  killed %d process(es); pid file removed" % (
            cid, len(pids)) in done.stdout
    assert ps.still_running(spared) == spared
    assert list(installed.state_root.glob("pids/*")) == []
    assert "not this container's supervisor (recycled?)" in done.stdout
    assert done.stdout.endswith("5 target(s) handled, none left running\n")


KILLED = "killed 3 process(es); pid file removed"


@pytest.mark.parametrize("flags,expect", [
    ([], lambda cid: "%s  %s\nterok-panic: 1 target(s) handled, none left "
     "running\n" % (cid, KILLED)),
    (["--json"], lambda cid: [{"container": cid, "error": None,
                               "what": KILLED}]),
    (["-q"], lambda cid: ""),
    (["--quiet", "--json"], lambda cid: []),
])
def test_output_formats(installed, monkeypatch, capsys, flags, expect):
    cid = ps.start_tree(installed, {"children": 1})
    ps.wait_tree(cid, 1)
    code, out = run_main(installed, monkeypatch, capsys, *flags)
    assert code == 0
    assert (json.loads(out) if "--json" in flags else out) == expect(cid)


@pytest.mark.parametrize("reap", [False, True], ids=["zombie", "reaped"])
def test_group_of_a_dead_leader_is_killed(installed, decoys, reap):
    leader = decoys.start(sys.executable, "-c", LEADER, pipe=True)
    child = int(leader.stdout.readline())
    if reap:
        leader.wait()
    else:
        wait_for(lambda: zombie(leader.pid), what="a zombie leader")
    cid = ps.new_cid()
    path = ps.write_pid_file(installed.state_root, cid, "%d" % leader.pid)
    rows = kill_all_supervisors(state_roots=[str(installed.state_root)])
    assert rows == [(cid, None)]
    assert not alive(child)
    assert not path.exists()


def test_live_wrapper_without_pid_file_is_found_by_argv(installed):
    cid = ps.start_tree(installed, {"children": 1})
    tree = ps.wait_tree(cid, 1)
    ps.pid_file(installed.state_root, cid).unlink()
    rows = kill_all_supervisors(state_roots=[str(installed.state_root)])
    assert rows == [(cid, None)]
    assert ps.still_running(tree) == []


def test_orphaned_service_children_are_found_by_argv(installed):
    cid = ps.start_tree(installed, {"children": 2, "detach_children": True})
    ps.wait_tree(cid, 2)
    path = ps.pid_file(installed.state_root, cid)
    os.killpg(int(path.read_text()), signal.SIGKILL)
    path.unlink()
    orphans = ps.pids_mentioning(cid, "supervise-child")
    assert len(orphans) == 2
    rows = kill_all_supervisors(state_roots=[str(installed.state_root)])
    assert rows == [(cid, None)]
    assert ps.still_running(orphans) == []


def _vanished(root, cid):
    gone = subprocess.Popen(["true"])
    gone.wait()
    ps.write_pid_file(root, cid, "%d\n" % gone.pid)


def _fifo(root, cid):
    ps.pid_file(root, cid).parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(ps.pid_file(root, cid))


def _link_to_our_pid(root, cid):
    target = Path(root) / "ours.txt"
    target.write_text("%d\n" % os.getpid())
    ps.pid_file(root, cid).parent.mkdir(parents=True, exist_ok=True)
    ps.pid_file(root, cid).symlink_to(target)


def _text(content):
    return lambda root, cid: ps.write_pid_file(root, cid, content)


BAD_PID_FILES = {
    "empty": (_text(""), "bad pid file (not a process id: b'')"),
    "garbage": (_text("garbage\n"), "not a process id: b'garbage'"),
    "zero": (_text("0\n"), "refusing process group 0"),
    "one": (_text("1"), "refusing process group 1"),
    "negative": (_text("-1\n"), "not a process id: b'-1'"),
    "beyond pid_max": (_text("9" * 30), "refusing process group 999"),
    "vanished": (_vanished, "nothing left running; pid file removed"),
    "fifo": (_fifo, "bad pid file (not a regular file)"),
    "symlink": (_link_to_our_pid, "Too many levels of symbolic links"),
}


@pytest.mark.parametrize("make,message", BAD_PID_FILES.values(),
                         ids=list(BAD_PID_FILES))
def test_bad_pid_file_is_removed_and_reported(installed, monkeypatch, capsys,
                                              make, message):
    cid = ps.new_cid()
    make(installed.state_root, cid)
    code, out = run_main(installed, monkeypatch, capsys)
    assert code == 0
    assert cid + "  " in out and message in out
    assert not os.path.lexists(ps.pid_file(installed.state_root, cid))
    assert alive(1) and alive(os.getpid())


# --- the standalone zip and the command line ---------------------------------

@pytest.mark.parametrize("flags,code,text", [
    (["--version"], 0, "terok-panic 0."),
    (["--help"], 0, "usage: terok-panic"),
    (["--bogus"], 2, "unrecognized arguments: --bogus"),
    (["-q", "extra"], 2, "unrecognized arguments: extra"),
])
@pytest.mark.parametrize("how", ["launcher", "python -I -S"])
def test_zip_answers_usage_under_isolated_mode(stage, tmp_path, flags, code,
                                               text, how):
    env = {"PATH": "/usr/bin:/bin", "TEROK_SANDBOX_STATE_DIR": str(tmp_path),
           "TEROK_INSTALL_RECORD": str(tmp_path / "none.json")}
    head = [sys.executable, "-I", "-S"] if how != "launcher" else []
    done = subprocess.run([*head, str(stage.zip), *flags], env=env,
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == code
    assert text in done.stdout + done.stderr


def test_import_stays_within_the_standard_library():
    code = ("import sys; sys.path.insert(0, %r); import terok_install.panic;"
            " print(sorted(m for m in ('jinja2', 'tomlkit', 'yaml', 're', "
            "'json', 'argparse', 'enum', 'subprocess') if m in sys.modules))"
            % str(REPO))
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_name_is_exported_lazily():
    import terok_install
    assert terok_install.kill_all_supervisors is kill_all_supervisors


# --- as another user -------------------------------------------------------

def test_read_only_pids_folder_still_kills(stage, someone):
    who, made = someone
    root = stage.path / ("ro-%d" % os.getpid())
    root.mkdir()
    try:
        made.append(who.start_tree(stage.system, root, {"children": 1}))
        tree = ps.wait_tree(made[0], 1)
        (root / "pids").chmod(0o555)
        done = who.run([str(stage.zip)],
                       env={"TEROK_SANDBOX_STATE_DIR": str(root),
                            "TEROK_INSTALL_RECORD": str(stage.record)})
        out = done.stdout.decode()
        assert done.returncode == 0, out + done.stderr.decode()
        assert ps.still_running(tree) == []
        assert "killed 3 process(es); cannot remove" in out
        assert ps.pid_file(root, made[0]).exists()
    finally:
        if (root / "pids").exists():
            (root / "pids").chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


def _user_record(who, stage, kind):
    path = who.home / ".local/state/terok-sandbox/install-record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_text(json.dumps(
            {"installs": [{"state_root": str(stage.system)}]}))


@ROOT_ONLY
@pytest.mark.parametrize("user_record,killed", [
    (None, True), ("json", True), ("fifo", False)],
    ids=["root's record", "user's record", "user's record is a FIFO"])
def test_root_reaches_supervisors_in_users_homes(stage, someone, tmp_path,
                                                 user_record, killed):
    """The install is known from root's record or the user's; a FIFO in
    its place must neither hang terok-panic nor lose the pid file."""
    who, made = someone
    root = who.home / ".local/share/terok/sandbox"
    record = tmp_path / "none.json" if user_record else stage.record
    try:
        made.append(who.start_tree(stage.system, root, {"children": 1}))
        tree = ps.wait_tree(made[0], 1)
        if user_record:
            _user_record(who, stage, user_record)
        who.own(who.home / ".local")
        env = {"PATH": "/usr/bin:/bin", "TEROK_INSTALL_RECORD": str(record),
               "TEROK_SANDBOX_STATE_DIR": str(tmp_path / "root-state")}
        done = subprocess.run([str(stage.zip)], env=env,
                              capture_output=True, text=True, timeout=20)
        assert done.returncode == (0 if killed else 1), done.stdout
        assert bool(ps.still_running(tree)) != killed
        assert ps.pid_file(root, made[0]).exists() != killed
        assert ("%s  killed 3 process(es)" if killed else
                "%s  FAILED: pid ") % made[0] in done.stdout
    finally:
        shutil.rmtree(who.home / ".local/share/terok", ignore_errors=True)
        shutil.rmtree(who.home / ".local/state/terok-sandbox",
                      ignore_errors=True)


@ROOT_ONLY
def test_user_cannot_kill_roots_supervisor(stage, someone):
    who, made = someone
    me = ps.Person(pwd.getpwuid(0), sys.executable)
    mine, theirs = stage.path / "root-root", stage.path / "user-root"
    try:
        made.append(me.start_tree(stage.system, mine))
        tree = ps.wait_tree(made[0])
        pgid = ps.pid_file(mine, made[0]).read_text()
        ps.write_pid_file(theirs, made[0], pgid)
        who.own(theirs)
        done = who.run([who.python, "-I", "-S", str(stage.zip), "-q"],
                       env={"TEROK_SANDBOX_STATE_DIR": str(theirs),
                            "TEROK_INSTALL_RECORD": str(stage.record)})
        assert done.returncode == 1
        assert done.stdout.decode() == (
            "%s  FAILED: not permitted to signal process group %d (EPERM)\n"
            % (made[0], int(pgid)))
        assert ps.still_running(tree) == tree
        assert ps.pid_file(theirs, made[0]).exists()
    finally:
        shutil.rmtree(mine, ignore_errors=True)
        shutil.rmtree(theirs, ignore_errors=True)


# --- a fake /proc ------------------------------------------------------------

@pytest.fixture
def fake(tmp_path):
    proc = ps.FakeProc(tmp_path / "proc")
    proc.state_root = tmp_path / "root"
    (proc.state_root / "pids").mkdir(parents=True)
    return proc


def sweep(fake):
    return kill_all_supervisors(proc=str(fake.root), kill=fake.kill,
                                state_roots=[str(fake.state_root)])


def wrapper_argv(root, cid, sidecar=b"/s/x.json"):
    return [b"/usr/bin/python3", b"-I", b"-S",
            os.fsencode(os.path.join(root, "supervisor_wrapper.py")),
            cid.encode() if isinstance(cid, str) else cid, sidecar, b"4242"]


def child_argv(cid, sidecar=b"/s/x.json"):
    return [b"/usr/bin/python3", b"-P", b"-m", b"terok_sandbox",
            b"supervise-child", b"svc0",
            cid.encode() if isinstance(cid, str) else cid, sidecar]


def fake_pid(n):
    return ps.FAKE_PID_BASE + n


def _recycled(fake, cid):
    fake.add(fake_pid(1), [b"sleep", b"60"])
    ps.write_pid_file(fake.state_root, cid, str(fake_pid(1)))
    return [(cid, None)]


def _unknown_root(fake, cid):
    fake.add(fake_pid(1), wrapper_argv("/elsewhere", cid))
    fake.add(fake_pid(2), wrapper_argv(str(fake.state_root) + "/x", cid))
    return []


def _wrapper_lookalikes(fake, cid):
    argv = wrapper_argv(fake.state_root, cid)
    fake.add(fake_pid(1), [b"/usr/bin/perl"] + argv[1:])
    fake.add(fake_pid(2), argv[:4] + [cid.encode() + b"!"] + argv[5:])
    fake.add(fake_pid(3), argv[:5] + [b"relative.json"])
    fake.add(fake_pid(4), argv[:3] + [argv[3] + b".bak"] + argv[4:])
    fake.add(fake_pid(5), argv[:4])
    return []


def _child_lookalikes(fake, cid):
    py = [b"/usr/bin/python3"]
    fake.add(fake_pid(1), py + [b"-c", b"pass", b"supervise-child-notes.txt",
                                cid.encode(), b"/s", b"x"])
    fake.add(fake_pid(2), py + [b"-m", b"terok_sandbox", b"doctor", b"svc0",
                                cid.encode(), b"/s"])
    fake.add(fake_pid(3), py + [b"-m", b"terok_sandbox.x",
                                b"supervise-child", b"svc0", cid.encode()])
    fake.add(fake_pid(4), py + [b"-mterok_sandbox", b"supervise-child",
                                b"svc0", cid.encode(), b"/s"])
    return []


def _system_pids(fake, cid):
    fake.add(1, child_argv(cid), pgid=1)
    ps.write_pid_file(fake.state_root, cid, "0")
    return [(cid, None)]


def _ourselves(fake, cid):
    fake.add(os.getpid(), child_argv(cid), pgid=fake_pid(9))
    return []


def _not_utf8(fake, cid):
    fake.add(fake_pid(1), b"\xff\xfe\x00\xc3(\x00")
    fake.add(fake_pid(2), wrapper_argv(fake.state_root, b"\xff" * 64))
    fake.add(fake_pid(3), [b"\xc3\x28"] + child_argv(cid)[1:5])
    return []


def _vanishing(fake, cid):
    (fake.root / str(fake_pid(1))).mkdir()
    fake.add(fake_pid(2), child_argv(cid))
    (fake.root / str(fake_pid(2)) / "stat").unlink()
    fake.add(fake_pid(3), child_argv(cid), state="Z")
    return []


NEVER_SIGNALLED = {
    "recycled pid": _recycled,
    "wrapper of an unknown root": _unknown_root,
    "wrapper lookalikes": _wrapper_lookalikes,
    "service child lookalikes": _child_lookalikes,
    "pid 1 and group 0": _system_pids,
    "terok-panic itself": _ourselves,
    "argv not UTF-8": _not_utf8,
    "vanished mid-scan": _vanishing,
}


@pytest.mark.parametrize("make", NEVER_SIGNALLED.values(),
                         ids=list(NEVER_SIGNALLED))
def test_fake_proc_never_signalled(fake, make):
    rows = make(fake, ps.new_cid())
    assert sweep(fake) == rows
    assert fake.calls == []


def test_fake_proc_own_group_is_refused(fake):
    cid = ps.new_cid()
    fake.add(fake_pid(1), [b"sleep", b"60"], pgid=os.getpgrp())
    ps.write_pid_file(fake.state_root, cid, str(os.getpgrp()))
    assert sweep(fake) == [(cid, "process group %d is terok-panic's own or "
                            "the system's; not signalled" % os.getpgrp())]
    assert fake.calls == []
    assert ps.pid_file(fake.state_root, cid).exists()


def test_fake_proc_not_utf8_service_children_are_killed(fake):
    cid = ps.new_cid()
    fake.add(fake_pid(1), child_argv(cid, b"/s/\xff.json"), fake_pid(8))
    fake.add(fake_pid(2), child_argv(b"\xff" + cid.encode()), fake_pid(8))
    argv = wrapper_argv(fake.state_root, cid, b"/s/\xfe.json")
    fake.add(fake_pid(3), [b"/opt/\xff/python3"] + argv[1:])
    fake.add(fake_pid(4), child_argv(cid), pgid=fake_pid(3))
    assert set(sweep(fake)) == {("?", None), (cid, None)}
    assert sorted(fake.signalled()) == [-fake_pid(3), fake_pid(1),
                                        fake_pid(2)]


def test_fake_proc_wrapper_of_an_unknown_root_keeps_its_pid_file(fake):
    cid = ps.new_cid()
    fake.add(fake_pid(1), wrapper_argv("/elsewhere", cid))
    ps.write_pid_file(fake.state_root, cid, str(fake_pid(1)))
    assert sweep(fake) == [(cid, "pid %d runs a supervisor_wrapper.py of no "
                            "install root we know; not signalled"
                            % fake_pid(1))]
    assert fake.calls == []
    assert ps.pid_file(fake.state_root, cid).exists()


def test_fake_proc_wrapper_of_another_container_is_its_own_target(fake):
    named, running = ps.new_cid(), ps.new_cid()
    fake.add(fake_pid(1), wrapper_argv(fake.state_root, running))
    ps.write_pid_file(fake.state_root, named, str(fake_pid(1)))
    assert sweep(fake) == [(named, None), (running, None)]
    assert fake.signalled() == [-fake_pid(1)]


@pytest.mark.parametrize("leader", [None, "Z"], ids=["gone", "zombie"])
def test_fake_proc_remnant_of_a_dead_leader_is_killed(fake, leader):
    cid = ps.new_cid()
    if leader:
        fake.add(fake_pid(1), None, state=leader)
    fake.add(fake_pid(2), [b"sleep", b"60"], pgid=fake_pid(1))
    ps.write_pid_file(fake.state_root, cid, str(fake_pid(1)))
    assert sweep(fake) == [(cid, None)]
    assert fake.signalled() == [-fake_pid(1)]
    assert fake.state(fake_pid(2)) == "Z"


def test_fake_proc_unreadable_leader_is_not_taken_for_dead(fake):
    """An error reading /proc (here EISDIR) must not pass for the end of a
    leader, whose group would then be killed without its argv checked."""
    cid = ps.new_cid()
    fake.add(fake_pid(1), wrapper_argv(fake.state_root, cid))
    stat = fake.root / str(fake_pid(1)) / "stat"
    stat.unlink()
    stat.mkdir()
    ps.write_pid_file(fake.state_root, cid, str(fake_pid(1)))
    [(row_cid, why)] = sweep(fake)
    assert row_cid == cid
    assert why.startswith("cannot read the state of pid %d (" % fake_pid(1))
    assert fake.calls == []
    assert ps.pid_file(fake.state_root, cid).exists()


def _denied(fake):
    fake.denied.add(-fake_pid(1))
    return "not permitted to signal process group %d (EPERM)" % fake_pid(1)


def _deaf(fake):
    fake.deaf.add(fake_pid(2))
    return "1 process(es) still running after SIGKILL: %d" % fake_pid(2)


@pytest.mark.parametrize("make", [_denied, _deaf], ids=["EPERM", "survivor"])
def test_fake_proc_failure_keeps_the_pid_file(fake, make):
    cid = ps.new_cid()
    fake.add(fake_pid(1), wrapper_argv(fake.state_root, cid))
    fake.add(fake_pid(2), child_argv(cid), pgid=fake_pid(1))
    ps.write_pid_file(fake.state_root, cid, str(fake_pid(1)))
    why = make(fake)
    assert sweep(fake) == [(cid, why)]
    assert ps.pid_file(fake.state_root, cid).exists()


def test_fake_proc_kills_everything_before_waiting_once(fake):
    cids = [ps.new_cid() for _ in range(3)]
    for n, cid in enumerate(cids, 1):
        fake.add(fake_pid(n), wrapper_argv(fake.state_root, cid))
        ps.write_pid_file(fake.state_root, cid, str(fake_pid(n)))
        fake.deaf.add(fake_pid(n))
    rows = sweep(fake)
    assert [cid for cid, why in rows if why] == sorted(cids)
    assert len(fake.calls) == 3


@ROOT_ONLY
@pytest.mark.parametrize("member_uid,signalled", [(4242, True),
                                                  (4343, False)])
def test_fake_proc_users_pid_file_reaches_only_their_processes(
        fake, member_uid, signalled):
    cid = ps.new_cid()
    fake.add(fake_pid(2), [b"sleep", b"60"], pgid=fake_pid(1))
    os.chown(fake.root / str(fake_pid(2)), member_uid, member_uid)
    path = ps.write_pid_file(fake.state_root, cid, str(fake_pid(1)))
    os.chown(path, 4242, 4242)
    rows = sweep(fake)
    assert fake.signalled() == ([-fake_pid(1)] if signalled else [])
    assert (rows[0][1] is None) == signalled
