"""The built artefacts: zipapp, terok-panic, .deb and .rpm, for real.

The session fixture ``dist`` runs ./build.sh once when dist/ is missing
or older than any source build.sh reads, then every test uses dist/.
Package tests install into this machine's real file system as root and
put it back afterwards (``host``); they skip when not run as root.
"""

import glob
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import pytest

import packaging_support as ps

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="installs packages; "
                                "run as root")
OLD_VERSION = "0.0.1"
HOOKS = "/var/lib/terok/sandbox/hooks"
CACHE = Path("/var/cache/terok-sandbox")
OPERATOR_CONF = (b"# the operator's own settings\n[engine]\n"
                 b'hooks_dir = ["/usr/share/containers/oci/hooks.d", '
                 b'"/opt/operator/hooks"]\n\n[network]\n'
                 b'default_network = "podman"\n')
BROKEN_CONF = b"[engine\nhooks_dir = [\n"
# Set by an admin's shell; a package install must ignore them all.
STRAY_ENV = ("TEROK_SANDBOX_STATE_DIR", "TEROK_ROOT", "TEROK_CONFIG_FILE",
             "CONTAINERS_CONF", "TEROK_INSTALL_RECORD")
PANIC_MODULES = ["terok_install/__init__.py",
                 "terok_install/hooks/__init__.py",
                 "terok_install/hooks/_supervisor_state.py",
                 "terok_install/panic.py"]
PANIC_ENTRIES = sorted(["__main__.py"] + PANIC_MODULES
                       + [m + "c" for m in PANIC_MODULES])
PYENV = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
PYTHONS = sorted(glob.glob(PYENV + "/versions/3.9*/bin/python")
                 + glob.glob(PYENV + "/versions/3.1[0-3]*/bin/python"))
PYTHON_IDS = [Path(p).parts[-3] for p in PYTHONS]
STAND_IN = ps.REPO / "tests" / "stand_in" / "terok-sandbox"


@pytest.fixture(scope="session")
def dist():
    return ps.fresh_dist()


@pytest.fixture(scope="session")
def old_dist(dist, tmp_path_factory):
    assert ps.run(["dpkg", "--compare-versions", OLD_VERSION, "lt",
                   dist.version], check=False).returncode == 0, \
        "OLD_VERSION %s must be older than %s" % (OLD_VERSION, dist.version)
    return ps.build(tmp_path_factory.mktemp("old-dist"), OLD_VERSION)


@pytest.fixture
def host(tmp_path):
    if not ROOT:
        pytest.skip("installs packages into the real file system; run as "
                    "root")
    with ps.host_lock():
        if ps.installed_version() is not None:
            pytest.skip("terok-sandbox is installed on this host already")
        strays = ps.stray_unpacks()
        saved = ps.Host(tmp_path / "backup")
        yield saved
        saved.restore()
    assert ps.stray_unpacks() == strays, "unpacked outside its cache"


def hostile_env():
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    env.update({name: "/tmp/terok-not-here/" + name for name in STRAY_ENV})
    return env


def apt(*args, check=True):
    return ps.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "-y",
                   "--no-install-recommends", *args],
                  env=hostile_env(), check=check)


def status(chroot=()):
    proc = ps.run([*chroot, "terok-install", "status", "--json"],
                  check=False, env=None if chroot else dict(
                      os.environ, PATH="/usr/sbin:/usr/bin:/sbin:/bin"))
    return {c["name"]: (c["ok"], c["detail"])
            for c in json.loads(proc.stdout)["checks"]}


def failed_checks(chroot=()):
    """Status checks that fail, but for the absent terok-sandbox runtime."""
    return [(name, detail) for name, (ok, detail) in status(chroot).items()
            if not ok and name != "terok-sandbox"]


def cache_dirs():
    return sorted(p.name for p in CACHE.iterdir()) if CACHE.exists() else []


def assert_installed(version, conf_before):
    assert ps.installed_version() == "ii %s" % version
    # No terok-sandbox runtime on this machine: a warning, not a failure.
    assert failed_checks() == []
    conf = ps.CONF.read_text()
    assert HOOKS in conf
    for line in (conf_before or b"").decode().splitlines():
        if not line.startswith("hooks_dir"):
            assert line in conf.splitlines()
    if conf_before:
        assert "/opt/operator/hooks" in conf
    unpacked = [n for n in cache_dirs() if not n.startswith(".")]
    assert len(unpacked) == 1 and unpacked[0].startswith("terok-install.pyz_")
    assert CACHE.stat().st_mode & 0o022 == 0
    assert not os.path.exists("/tmp/terok-not-here")


# --- the artefacts themselves ----------------------------------------------

def test_only_the_four_artefacts_match_the_globs(dist):
    assert glob.glob(str(dist.folder / "terok-sandbox_*_all.deb")) == \
        [str(dist.deb)]
    assert glob.glob(str(dist.folder / "terok-sandbox-*.noarch.rpm")) == \
        [str(dist.rpm)]


def test_zipapp_is_small_and_pure_python(dist):
    assert dist.pyz.stat().st_size <= 1536 * 1024
    assert dist.pyz.read_bytes().startswith(b"#!/usr/bin/python3\n")
    with zipfile.ZipFile(dist.pyz) as z:
        names = z.namelist()
        elf = [n for n in names if z.read(n)[:4] == b"\x7fELF"]
    assert elf == []
    assert not [n for n in names if n.endswith((".so", ".c"))
                or n.endswith("direct_url.json")]
    # Bytecode for the build's Python only, each beside its source, so
    # that any other version compiles the source as usual.
    for pyc in (n for n in names if n.endswith(".pyc")):
        folder, _, base = pyc.rpartition("/__pycache__/")
        assert folder + "/" + base.split(".")[0] + ".py" in names, pyc
    assert "site-packages/terok_install/cli.py" in names
    assert "site-packages/bin/prune_cache.py" in names


def test_dependencies_travel_as_one_pure_python_zip(dist):
    """jinja2, MarkupSafe, tomlkit and PyYAML are imported from a zip in
    site-packages, so a first run unpacks one file for them."""
    with zipfile.ZipFile(dist.pyz) as z:
        unpacked = {n.split("/")[1] for n in z.namelist()
                    if n.startswith("site-packages/")}
        pth = z.read("site-packages/terok-install-deps.pth")
        inner = z.read("site-packages/terok-install-deps.zip")
    assert unpacked == {"bin", "terok_install", "terok-install-deps.pth",
                        "terok-install-deps.zip",
                        "terok_install-%s.dist-info" % dist.version}
    assert pth == b"terok-install-deps.zip\n"
    with zipfile.ZipFile(io.BytesIO(inner)) as z:
        names = z.namelist()
        assert all(z.read(n)[:4] != b"\x7fELF" for n in names)
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
    assert {n.split("/")[0] for n in names} >= {"jinja2", "markupsafe",
                                                "tomlkit", "yaml"}
    assert not [n for n in names if n.endswith((".so", ".c", ".pyi"))]
    # zipimport looks for bytecode beside the source, not in __pycache__.
    sources = {n for n in names if n.endswith(".py")}
    assert {n[:-1] for n in names if n.endswith(".pyc")} == sources


def test_terok_panic_is_a_launcher_and_a_stdlib_zip(dist):
    data = dist.panic.read_bytes()
    assert data.startswith(b"#!/bin/sh\nexec /usr/bin/python3 -I -S -c ")
    assert os.access(dist.panic, os.X_OK)
    with zipfile.ZipFile(dist.panic) as z:
        assert z.namelist() == PANIC_ENTRIES
    # What lintian's shell syntax check runs: the zip is a here-document.
    ps.run(["dash", "-n", str(dist.panic)])
    for argv in ([str(dist.panic)], ["/usr/bin/python3", "-I", "-S",
                                     str(dist.panic)]):
        proc = ps.run(argv + ["--version"])
        assert proc.stdout.strip() == "terok-panic " + dist.version


def test_build_is_reproducible(dist, tmp_path):
    again = ps.build(tmp_path / "again")
    assert [ps.sha256(p) for p in again.all()] == \
        [ps.sha256(p) for p in dist.all()]


def test_build_refuses_disagreeing_versions(tmp_path):
    tree = tmp_path / "tree"
    for name in ("build.sh", "debian", "rpm", "terok_install"):
        ps.copy(ps.REPO / name, tree / name)
    init = tree / "terok_install" / "__init__.py"
    init.write_text(init.read_text().replace(
        '__version__ = "', '__version__ = "9'))
    proc = ps.run(["bash", str(tree / "build.sh")], check=False)
    assert proc.returncode == 1
    assert "debian/changelog" in proc.stderr
    assert not (tree / "dist").exists()


def test_lintian_reports_no_error_or_warning(dist):
    proc = ps.run(["lintian", "--info", "--fail-on", "error,warning",
                   str(dist.deb)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not [line for line in proc.stdout.splitlines()
                if line[:2] in ("E:", "W:")]


def test_rpmlint_reports_no_error(dist):
    proc = ps.run(["rpmlint", str(dist.rpm)], check=False)
    assert " 0 errors," in proc.stdout, proc.stdout
    assert ": E: " not in proc.stdout


def test_zipapp_reads_config_yml_through_its_zipped_yaml(dist, tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("paths:\n  root: %s\n" % (tmp_path / "terok"))
    env = dict(os.environ, SHIV_ROOT=str(tmp_path / "cache"),
               CONTAINERS_CONF=str(tmp_path / "containers.conf"),
               TEROK_INSTALL_RECORD=str(tmp_path / "record.json"),
               TEROK_CONFIG_FILE=str(config))
    for name in ("TEROK_ROOT", "TEROK_SANDBOX_STATE_DIR"):
        env.pop(name, None)
    ps.run(["/usr/bin/python3", str(dist.pyz), "install", "-q",
            "--sandbox-bin", str(STAND_IN)], env=env)
    assert (tmp_path / "terok" / "sandbox" / "hooks").is_dir()
    ps.run(["/usr/bin/python3", str(dist.pyz), "uninstall", "-q"], env=env)
    assert not (tmp_path / "terok" / "sandbox").exists()


@pytest.mark.skipif(not PYTHONS, reason="no pyenv Python 3.9-3.13 here")
@pytest.mark.parametrize("python", PYTHONS, ids=PYTHON_IDS)
def test_zipapp_runs_on(python, dist, tmp_path):
    env = dict(os.environ, SHIV_ROOT=str(tmp_path / "cache"),
               TEROK_SANDBOX_STATE_DIR=str(tmp_path / "state"),
               CONTAINERS_CONF=str(tmp_path / "containers.conf"),
               TEROK_INSTALL_RECORD=str(tmp_path / "record.json"),
               TEROK_CONFIG_FILE=str(tmp_path / "no-config.yml"))
    env.pop("TEROK_ROOT", None)

    def pyz(*args):
        return ps.run([python, str(dist.pyz), *args], env=env, check=False)

    assert pyz("--version").stdout.strip() == \
        "terok-install " + dist.version
    lock, unpacked = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert lock == ".%s_lock" % unpacked
    assert unpacked.startswith("terok-install.pyz_")
    assert pyz("status").returncode == 1
    assert pyz("install", "-q", "--sandbox-bin", str(STAND_IN)) \
        .returncode == 0
    assert pyz("status").returncode == 0
    assert pyz("uninstall", "-q").returncode == 0
    conf = tmp_path / "containers.conf"
    assert not conf.exists() or "state" not in conf.read_text()


@pytest.mark.skipif(not PYTHONS, reason="no pyenv Python 3.9-3.13 here")
@pytest.mark.parametrize("python", PYTHONS, ids=PYTHON_IDS)
def test_terok_panic_runs_on(python, dist, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    proc = ps.run([python, "-I", "-S", str(dist.panic), "--help"], env=env)
    assert proc.stdout.startswith("usage: terok-panic")
    proc = ps.run([python, "-I", "-S", str(dist.panic), "--version"],
                  env=env)
    assert proc.stdout.strip() == "terok-panic " + dist.version
    assert list(home.iterdir()) == []


# --- maintainer scripts, run directly with a stand-in terok-install --------

DISPATCH = [
    ("postinst", "configure", "install"),
    ("postinst", "abort-upgrade", "install"),
    ("postinst", "abort-remove", "install"),
    ("postinst", "abort-deconfigure", "install"),
    ("prerm", "remove", "uninstall"),
    ("prerm", "deconfigure", "uninstall"),
    ("prerm", "upgrade", None),
    ("prerm", "failed-upgrade", None),
    ("postrm", "remove", None),
    ("postrm", "upgrade", None),
    ("postrm", "failed-upgrade", None),
    ("postrm", "abort-install", None),
    ("postrm", "abort-upgrade", None),
    ("postrm", "disappear", None),
]


@pytest.fixture(scope="session")
def control(dist, tmp_path_factory):
    folder = tmp_path_factory.mktemp("control")
    ps.run(["dpkg-deb", "--control", str(dist.deb), str(folder)])
    return folder


def run_script(control, tmp_path, script, action, rc=0):
    fake = tmp_path / "bin" / "terok-install"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$*" >>"$FAKE_LOG"\n'
                    'env | grep "^TEROK_" >>"$FAKE_LOG"\nexit %d\n' % rc)
    fake.chmod(0o755)
    env = hostile_env()
    env.update(PATH="%s:/usr/sbin:/usr/bin:/sbin:/bin" % fake.parent,
               FAKE_LOG=str(tmp_path / "log"))
    proc = ps.run([str(control / script), action, "0.0.1"], env=env,
                  check=False)
    log = tmp_path / "log"
    return proc, log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("script,action,command", DISPATCH)
def test_maintainer_script_dispatch(control, tmp_path, script, action,
                                    command):
    proc, calls = run_script(control, tmp_path, script, action)
    assert proc.returncode == 0, proc.stderr
    assert calls == ([command] if command else [])


@pytest.mark.parametrize("script", ["postinst", "prerm", "postrm"])
def test_maintainer_script_refuses_unknown_action(control, tmp_path,
                                                  script):
    proc, calls = run_script(control, tmp_path, script, "bogus")
    assert proc.returncode == 1
    assert "unknown argument 'bogus'" in proc.stderr
    assert calls == []


@pytest.mark.parametrize("script,action", [("postinst", "configure"),
                                           ("prerm", "remove")])
def test_maintainer_script_passes_failure_on(control, tmp_path, script,
                                             action):
    proc, _ = run_script(control, tmp_path, script, action, rc=1)
    assert proc.returncode == 1


# --- the admin command's unpack cache --------------------------------------

CACHE_CASES = [
    ("root", {}, "/var/cache/terok-sandbox"),
    ("root", {"SHIV_ROOT": "/tmp/elsewhere"}, "/var/cache/terok-sandbox"),
    ("nobody", {}, "{home}/.cache/terok-sandbox"),
    ("nobody", {"XDG_CACHE_HOME": "/x/cache"}, "/x/cache/terok-sandbox"),
    ("nobody", {"XDG_CACHE_HOME": "rel"}, "{home}/.cache/terok-sandbox"),
]


@pytest.fixture
def shared_tmp():
    """A folder that nobody can read too, unlike pytest's tmp_path."""
    folder = Path(tempfile.mkdtemp(prefix="terok-admin-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@needs_root
@pytest.mark.parametrize("user,extra,expected", CACHE_CASES)
def test_admin_command_unpacks_in_the_right_cache(shared_tmp, user, extra,
                                                  expected):
    # A stand-in for the zipapp reports what shiv would be told.
    probe = shared_tmp / "probe.py"
    probe.write_text("import os\nprint(os.environ['SHIV_ROOT'], "
                     "os.environ.get('SHIV_ENTRY_POINT'))\n")
    admin = shared_tmp / "terok-install"
    template = (ps.REPO / "packaging" / "terok-install.in").read_text()
    admin.write_text(template.replace("@PYZ@", str(probe)))
    admin.chmod(0o755)
    home = shared_tmp / "home"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home),
           "SHIV_ENTRY_POINT": "os:abort", **extra}
    prefix = [] if user == "root" else [
        "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    proc = ps.run(prefix + [str(admin)], env=env)
    assert proc.stdout.split() == [expected.format(home=home), "None"]


# --- the .deb on this host -------------------------------------------------

@pytest.mark.parametrize("conf", [None, OPERATOR_CONF],
                         ids=["no-conf", "operator-conf"])
def test_deb_install_reinstall_remove_purge(host, dist, conf):
    host.write_conf(conf)
    before = ps.snapshot()
    apt("install", str(dist.deb))
    assert_installed(dist.version, conf)
    apt("install", "--reinstall", str(dist.deb))
    assert_installed(dist.version, conf)
    apt("remove", "terok-sandbox")
    assert (ps.CONF.read_bytes() if ps.CONF.exists() else None) == conf
    after = ps.snapshot()
    assert {p: v for p, v in after.items() if not p.startswith(str(CACHE))} \
        == before
    apt("purge", "terok-sandbox")
    assert ps.installed_version() is None
    assert ps.snapshot() == before


def test_deb_upgrade_re_renders_and_prunes_the_cache(host, dist, old_dist):
    host.write_conf(OPERATOR_CONF)
    before = ps.snapshot()
    apt("install", str(old_dist.deb))
    assert_installed(OLD_VERSION, OPERATOR_CONF)
    old_cache = cache_dirs()
    apt("install", str(dist.deb))
    assert_installed(dist.version, OPERATOR_CONF)
    assert set(cache_dirs()).isdisjoint(old_cache)
    assert len(cache_dirs()) == 2  # the unpacked folder and its lock
    apt("purge", "terok-sandbox")
    assert ps.snapshot() == before


def test_deb_configure_fails_on_a_broken_containers_conf(host, dist):
    host.write_conf(BROKEN_CONF)
    before = ps.snapshot()
    proc = apt("install", str(dist.deb), check=False)
    assert proc.returncode != 0
    assert "/etc/containers/containers.conf: " in proc.stdout + proc.stderr
    assert ps.CONF.read_bytes() == BROKEN_CONF
    assert not glob.glob(HOOKS + "/*.json")
    host.write_conf(OPERATOR_CONF)
    ps.run(["dpkg", "--configure", "terok-sandbox"], env=hostile_env())
    assert_installed(dist.version, OPERATOR_CONF)
    apt("purge", "terok-sandbox")
    assert ps.CONF.read_bytes() == OPERATOR_CONF
    host.write_conf(BROKEN_CONF)
    assert ps.snapshot() == before


# --- the .rpm on this host, with a database of its own ---------------------

def rpm(dbpath, *args, check=True):
    return ps.run(["rpm", "--dbpath", str(dbpath), *args], check=check,
                  env=hostile_env())


def test_rpm_install_upgrade_reinstall_erase(host, dist, old_dist, tmp_path):
    host.write_conf(OPERATOR_CONF)
    before = ps.snapshot()
    db = tmp_path / "rpmdb"
    rpm(db, "-i", "--nodeps", str(old_dist.rpm))
    assert status()["registered"][0]
    old_cache = cache_dirs()
    rpm(db, "-U", "--nodeps", str(dist.rpm))
    assert rpm(db, "-q", "terok-sandbox").stdout.strip() == \
        "terok-sandbox-%s-%s.noarch" % (dist.version, ps.rpm_release())
    assert set(cache_dirs()).isdisjoint(old_cache)
    assert failed_checks() == []
    assert os.path.isfile("/usr/libexec/terok-sandbox/terok-install.pyz")
    rpm(db, "-U", "--nodeps", "--replacepkgs", str(dist.rpm))
    assert status()["registered"][0]
    rpm(db, "-e", "--nodeps", "terok-sandbox")
    assert ps.CONF.read_bytes() == OPERATOR_CONF
    after = ps.snapshot()
    if "/usr/share/licenses" not in before:
        # rpm made this folder for our licence but does not own it, so
        # rpm -e leaves it behind; the host fixture takes it away.
        assert os.listdir("/usr/share/licenses") == []
        after.pop("/usr/share/licenses")
    assert after == before


# --- a minimal Debian 12 ---------------------------------------------------

@pytest.fixture(scope="session")
def bookworm():
    if not ROOT:
        pytest.skip("debootstrap and chroot need root")
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed")
    root = ps.bookworm_chroot(ps.REPO / "build" / "bookworm-minbase")
    if root is None:
        pytest.skip("apt has no bookworm source to debootstrap from")
    return root


def test_deb_installs_on_minimal_bookworm(bookworm, dist, tmp_path):
    root = tmp_path / "root"
    try:
        ps.run(["cp", "-a", str(bookworm), str(root)])
        shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
        shutil.copy(dist.deb, root / dist.deb.name)
        chroot = ["chroot", str(root), "env", "-i",
                  "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                  "DEBIAN_FRONTEND=noninteractive"]
        ps.run(chroot + ["apt-get", "update", "-q"])
        ps.run(chroot + ["apt-get", "install", "-y", "-q",
                         "--no-install-recommends", "./" + dist.deb.name])
        assert failed_checks(chroot) == []
        ps.run(chroot + ["terok-panic", "--help"])
    finally:
        ps.unmount_under(root)
        assert ps.mounts_under(root) == []
        shutil.rmtree(root, ignore_errors=True)
    assert ps.mounts_under(bookworm) == []
