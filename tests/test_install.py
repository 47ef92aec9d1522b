"""install, uninstall and status through the CLI, on real files in tmp_path."""

import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import REPO, STAND_IN

HOOK_FILES = ("hooks/supervisor_hook.py", "hooks/_supervisor_state.py",
              "hooks/terok-sandbox-supervisor-createRuntime.json",
              "hooks/terok-sandbox-supervisor-poststop.json",
              "supervisor_wrapper.py")


def snapshot(folder):
    """{relative path: (mode, bytes, mtime)} of every file under *folder*."""
    found = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = (
                    info.st_mode, f.read(), info.st_mtime_ns)
    return found


def test_install_lays_down_every_file(installed):
    for name in HOOK_FILES:
        assert (installed.state_root / name).is_file(), name
    mode = stat.S_IMODE((installed.hooks_dir / "supervisor_hook.py")
                        .stat().st_mode)
    assert mode == 0o755


@pytest.mark.parametrize("stage", ["createRuntime", "poststop"])
def test_descriptor_runs_the_hook_isolated(installed, stage):
    d = installed.descriptor(stage)
    assert d["version"] == "1.0.0"
    assert d["stages"] == [stage]
    assert d["when"] == {"annotations": {"terok.sandbox.sidecar": ".+"}}
    assert os.path.isabs(d["hook"]["path"])
    args = d["hook"]["args"]
    assert args[:4] == [d["hook"]["path"], "-I", "-S", "-c"]
    assert args[5:] == [str(installed.hooks_dir / "supervisor_hook.py"),
                        stage]
    assert d["hook"]["env"] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def test_hook_whose_script_vanished_exits_zero(installed):
    """Podman may run a descriptor it read before an uninstall."""
    hook = installed.descriptor("createRuntime")["hook"]
    installed.cli("uninstall", check=True)
    proc = subprocess.run(hook["args"], executable=hook["path"], env={},
                          input=b"{}", capture_output=True)
    assert proc.returncode == 0 and proc.stderr == b""


def test_second_install_changes_no_byte(installed):
    before = snapshot(installed.tmp)
    proc = installed.install()
    assert "already up to date" in proc.stderr
    assert snapshot(installed.tmp) == before


def test_install_registers_after_the_defaults(installed):
    text = installed.conf.read_text()
    assert text == ('[engine]\nhooks_dir = ["/usr/share/containers/oci/'
                    'hooks.d", "%s"]\n' % installed.hooks_dir)


OPERATOR_CONFS = {
    "empty": "",
    "comments only": "# nothing set here\n\n",
    "engine without hooks_dir": (
        '# operator\n[engine]\ncgroup_manager = "cgroupfs"  # why\n\n'
        '[network]\nnetwork_backend = "netavark"\n'),
    "hooks_dir set": (
        '[containers]\nlog_size_max = -1\n\n[engine]\n'
        'hooks_dir = [\n  "/opt/gpu/hooks",  # GPU toolkit\n]\n'
        'events_logger = "file"\n'),
    "no trailing newline": '[engine]\nhooks_dir = ["/a"]',
}


@pytest.mark.parametrize("text", OPERATOR_CONFS.values(),
                         ids=OPERATOR_CONFS.keys())
def test_uninstall_restores_operator_file_byte_for_byte(terok, text):
    terok.conf.parent.mkdir(parents=True)
    terok.conf.write_text(text)
    os.chmod(terok.conf, 0o640)
    terok.install()
    assert str(terok.hooks_dir) in terok.conf.read_text()
    terok.cli("uninstall", check=True)
    assert terok.conf.read_text() == text
    assert stat.S_IMODE(terok.conf.stat().st_mode) == 0o640


def test_uninstall_removes_the_file_it_created(installed):
    installed.cli("uninstall", check=True)
    assert not installed.conf.exists()
    assert not installed.conf.parent.exists()
    assert not installed.record.exists()
    assert not installed.state_root.exists()


def test_registration_keeps_existing_dirs_once(terok):
    terok.conf.parent.mkdir(parents=True)
    terok.conf.write_text('[engine]\nhooks_dir = ["/opt/gpu"]\n')
    terok.install()
    terok.install()
    assert terok.conf.read_text() == (
        '[engine]\nhooks_dir = ["/opt/gpu", "%s"]\n' % terok.hooks_dir)


def test_operator_edit_between_install_and_uninstall_survives(installed):
    text = installed.conf.read_text()
    edited = "# added by the operator\n" + text.replace(
        "[engine]\n", '[engine]\nevents_logger = "file"\n')
    installed.conf.write_text(edited)
    installed.cli("uninstall", check=True)
    after = installed.conf.read_text()
    assert "# added by the operator" in after
    assert 'events_logger = "file"' in after
    assert str(installed.hooks_dir) not in after
    assert "hooks_dir" not in after


def test_operator_entry_added_meanwhile_stays(installed):
    text = installed.conf.read_text().replace('"]', '", "/opt/theirs"]')
    installed.conf.write_text(text)
    installed.cli("uninstall", check=True)
    assert installed.conf.read_text() == (
        '[engine]\nhooks_dir = ["/opt/theirs"]\n')


def test_uninstall_keeps_per_container_state(installed):
    sidecar = installed.sidecar(root=installed.state_root)
    for name in ("logs/x.log", "pids/supervisor-x.pid", "notes.txt"):
        path = installed.state_root / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("keep")
    installed.cli("uninstall", check=True)
    assert sidecar.exists()
    for name in ("logs/x.log", "pids/supervisor-x.pid", "notes.txt"):
        assert (installed.state_root / name).read_text() == "keep"
    for name in HOOK_FILES:
        assert not (installed.state_root / name).exists()


def test_uninstall_twice_is_fine(installed):
    installed.cli("uninstall", check=True)
    proc = installed.cli("uninstall")
    assert proc.returncode == 0
    assert "no install" in proc.stderr


def test_hooks_dir_option_moves_descriptors(terok):
    elsewhere = terok.tmp / "hooks.d"
    terok.install("--hooks-dir", str(elsewhere))
    d = terok.descriptor("createRuntime", hooks_dir=elsewhere)
    assert d["hook"]["args"][5] == str(terok.hooks_dir / "supervisor_hook.py")
    assert not (terok.hooks_dir / "terok-sandbox-supervisor-poststop.json"
                ).exists()
    assert str(elsewhere) in terok.conf.read_text()
    assert terok.cli("status", "--hooks-dir", str(elsewhere)).returncode == 0
    terok.cli("uninstall", "--hooks-dir", str(elsewhere), check=True)
    assert not elsewhere.exists()
    assert not terok.conf.exists()


BAD_CONFS = [
    ("[engine\nhooks_dir = []\n", "not valid TOML"),
    ('[engine]\nhooks_dir = "/opt/x"\n', "must be a list"),
    ("[engine]\nhooks_dir = [1, 2]\n", "only strings"),
    ('engine = "x"\n', "must be a table"),
    (b"[engine]\n# \xff\n", "not UTF-8"),
]


@pytest.mark.parametrize("text,message", BAD_CONFS)
def test_bad_containers_conf_is_refused_untouched(terok, text, message):
    terok.conf.parent.mkdir(parents=True)
    data = text if isinstance(text, bytes) else text.encode()
    terok.conf.write_bytes(data)
    proc = terok.cli("install", "--sandbox-bin", str(STAND_IN))
    assert proc.returncode == 1
    assert message in proc.stderr and str(terok.conf) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert terok.conf.read_bytes() == data
    assert not list(terok.tmp.glob("**/*.json"))


def test_read_only_containers_conf_is_refused(terok):
    terok.conf.parent.mkdir(parents=True)
    terok.conf.write_text("[engine]\n")
    os.chmod(terok.conf, 0o444)
    proc = terok.cli("install")
    assert proc.returncode == 1
    assert "read-only" in proc.stderr and str(terok.conf) in proc.stderr
    assert terok.conf.read_text() == "[engine]\n"
    assert not terok.hooks_dir.exists()


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_state_root_others_can_write_is_refused(terok, mode):
    terok.state_root.mkdir()
    os.chmod(terok.state_root, mode)
    proc = terok.cli("install")
    assert proc.returncode == 1
    assert "writable by group or others" in proc.stderr
    assert not terok.hooks_dir.exists()


def test_files_are_not_group_or_world_writable(terok):
    env = dict(terok.env)
    proc = subprocess.run(
        ["sh", "-c", 'umask 000 && exec "$0" -m terok_install install',
         sys.executable], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for path in [terok.state_root, *terok.state_root.rglob("*")]:
        assert not path.stat().st_mode & 0o022, path


def test_no_runtime_found_is_a_warning(terok):
    env = dict(terok.env, PATH="/nonexistent", HOME=str(terok.tmp))
    proc = terok.cli("install", env=env)
    assert proc.returncode == 0
    assert "warning: terok-sandbox was not found" in proc.stderr
    assert "return None" in (terok.state_root / "supervisor_wrapper.py"
                             ).read_text()


def test_runtime_found_through_env_and_path(terok, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "terok-sandbox").symlink_to(STAND_IN)
    for env_extra, expected in (
            ({"PATH": str(bindir)}, bindir / "terok-sandbox"),
            ({"TEROK_SANDBOX_BIN": str(STAND_IN)}, STAND_IN)):
        proc = terok.cli("install", env=dict(terok.env, **env_extra))
        assert proc.returncode == 0, proc.stderr
        wrapper = (terok.state_root / "supervisor_wrapper.py").read_text()
        assert "return [%r]" % str(expected) in wrapper


def test_sandbox_bin_option_must_be_executable(terok):
    proc = terok.cli("install", "--sandbox-bin", str(terok.tmp / "nope"))
    assert proc.returncode == 1
    assert "not an executable file" in proc.stderr


def test_status_green_after_install(installed):
    proc = installed.cli("status")
    assert proc.returncode == 0, proc.stdout
    assert "all good" in proc.stdout
    report = json.loads(installed.cli("status", "--json").stdout)
    assert report["ok"] and report["supervisors"] == []


def test_status_reports_a_deleted_state_root_and_install_repairs(installed):
    import shutil
    shutil.rmtree(installed.state_root)
    proc = installed.cli("status")
    assert proc.returncode == 1
    assert "state root" in proc.stdout and "missing" in proc.stdout
    installed.install()
    assert installed.cli("status").returncode == 0


def test_status_notices_an_edited_hook(installed):
    with open(installed.hooks_dir / "supervisor_hook.py", "a") as f:
        f.write("# tampered\n")
    proc = installed.cli("status", "--json")
    assert proc.returncode == 1
    failed = [c["name"] for c in json.loads(proc.stdout)["checks"]
              if not c["ok"]]
    assert failed == ["supervisor_hook.py"]


def test_status_without_registration_fails(installed):
    installed.conf.write_text('[engine]\nhooks_dir = ["/elsewhere"]\n')
    proc = installed.cli("status")
    assert proc.returncode == 1
    assert "not in the effective hooks_dir" in proc.stdout


@pytest.mark.parametrize("args,code", [
    (["--help"], 0), (["--version"], 0), ([], 2), (["bogus"], 2),
    (["install", "--bogus"], 2), (["status", "--help"], 0)])
def test_cli_usage(terok, args, code):
    proc = terok.cli(*args)
    assert proc.returncode == code
    assert "Traceback" not in proc.stderr


def test_version_matches_package(terok):
    from terok_install import __version__
    assert terok.cli("--version").stdout.strip() == (
        "terok-install " + __version__)


def test_quiet_install_prints_nothing(terok):
    proc = terok.cli("install", "-q", "--sandbox-bin", str(STAND_IN))
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == ""


STATE_ROOT_CASES = [
    ({"TEROK_SANDBOX_STATE_DIR": "/x/state"}, None, "/x/state"),
    ({"TEROK_ROOT": "/x/terok"}, None, "/x/terok/sandbox"),
    ({}, "paths:\n  root: /x/cfg\n", "/x/cfg/sandbox"),
    ({}, "other: 1\n", None),
    ({"TEROK_ROOT": "/x/terok"}, "paths:\n  root: /x/cfg\n",
     "/x/terok/sandbox"),
]


@pytest.mark.parametrize("env,config,expected", STATE_ROOT_CASES)
def test_state_root_resolution(tmp_path, env, config, expected):
    from terok_install import state_root
    config_file = tmp_path / "config.yml"
    if config is not None:
        config_file.write_text(config)
    full = {"HOME": str(tmp_path), "TEROK_CONFIG_FILE": str(config_file)}
    full.update(env)
    if expected is None:
        expected = ("/var/lib/terok/sandbox" if os.geteuid() == 0
                    else str(tmp_path / ".local/share/terok/sandbox"))
    assert state_root(full) == expected


BAD_CONFIGS = [
    ("paths: [\n", "not valid YAML"),
    ("- a\n- b\n", "mapping at the top level"),
    ("paths: 3\n", "'paths' must be a mapping"),
    ("paths:\n  root: relative/dir\n", "must be an absolute path"),
]


@pytest.mark.parametrize("text,message", BAD_CONFIGS)
def test_bad_config_yml_is_a_clear_error(terok, text, message):
    config = terok.tmp / "config.yml"
    config.write_text(text)
    env = dict(terok.env, TEROK_CONFIG_FILE=str(config))
    del env["TEROK_SANDBOX_STATE_DIR"]
    proc = terok.cli("install", env=env)
    assert proc.returncode == 1
    assert str(config) in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreadable_config_yml_is_a_clear_error(terok):
    config = terok.tmp / "config.yml"
    config.mkdir()
    env = dict(terok.env, TEROK_CONFIG_FILE=str(config))
    del env["TEROK_SANDBOX_STATE_DIR"]
    proc = terok.cli("status", env=env)
    assert proc.returncode == 1
    assert "cannot read it" in proc.stderr


def test_public_api(terok, monkeypatch):
    for name, value in terok.env.items():
        monkeypatch.setenv(name, value)
    import terok_install
    result = terok_install.install_supervisor_hooks(
        hooks_dir=str(terok.tmp / "api.d"))
    assert os.path.isfile(terok.tmp / "api.d" /
                          "terok-sandbox-supervisor-poststop.json")
    assert result.state_root == str(terok.state_root)
    terok_install.uninstall_supervisor_hooks(
        hooks_dir=str(terok.tmp / "api.d"))
    assert not (terok.tmp / "api.d").exists()


def test_package_import_is_lazy():
    code = ("import sys, terok_install.panic; "
            "print(sorted(m for m in ('jinja2', 'tomlkit', 'yaml') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
