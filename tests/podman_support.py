"""Rootless Podman as a throwaway user, for the end-to-end tests.

The tests run as root and reach the user through ``su -``: it gives the
login environment Podman expects (the user's HOME and PATH, nothing of
root's), and without XDG_RUNTIME_DIR rootless Podman keeps its runtime
files in ``/tmp/podman-run-<uid>``. The only image is busybox, packed from
the host's static busybox into a tar cached under ``build/``. crun fails on
these hosts' cgroup layout, hence ``--runtime runc``; ``--network none``
needs no network setup.
"""

import configparser
import contextlib
import importlib.metadata
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from procfs import pids_mentioning

USER = "terok-e2e"
IMAGE = "localhost/terok-e2e-bb:latest"
RUN_FLAGS = ("--runtime", "runc", "--network", "none")
ANNOTATION = "terok.sandbox.sidecar"
BUSYBOX_LINKS = ("sh", "sleep", "true", "echo", "cat")
REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build" / "e2e"
STAND_IN = REPO / "tests" / "stand_in"
COMMAND_TIMEOUT_S = 180
POLL_S = 0.05


def skip_reason():
    """Why the end-to-end tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "end-to-end Podman tests run as root (they make a test user)"
    for tool in ("podman", "runc", "newuidmap", "busybox", "su", "useradd"):
        if shutil.which(tool) is None:
            return ("%s is missing: apt-get install podman runc uidmap "
                    "busybox-static" % tool)
    return None


class User:
    """The test user: who it is and where its terok and Podman files live."""

    def __init__(self, entry):
        self.name = entry.pw_name
        self.home = Path(entry.pw_dir)
        self.state_root = self.home / ".local/share/terok/sandbox"
        self.containers_conf = self.home / ".config/containers/containers.conf"
        self.install_state = self.home / ".local/state/terok-sandbox"

    def run(self, cmd, timeout=COMMAND_TIMEOUT_S, **kw):
        """Run shell *cmd* as the user in a login environment."""
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.run(["su", "-", self.name, "-c", cmd], cwd="/",
                              text=True, timeout=timeout, **kw)

    def spawn(self, cmd):
        """Start shell *cmd* as the user in the background."""
        return subprocess.Popen(["su", "-", self.name, "-c", cmd], cwd="/",
                                stdin=subprocess.DEVNULL, text=True,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def podman(self, *args, **kw):
        return self.run(shlex.join(["podman", *args]), **kw)

    def podman_run(self, *args, **kw):
        """``podman run`` with this host's runtime and network flags."""
        return self.podman("run", *RUN_FLAGS, *args, **kw)

    def write_sidecar(self, steer=None, name="x.json"):
        """A sidecar under the user's state root; the stand-in obeys *steer*."""
        path = self.state_root / "sidecar" / name
        body = json.dumps({"standin": steer or {}})
        done = self.run("mkdir -p %s && cat > %s" % (
            shlex.quote(str(path.parent)), shlex.quote(str(path))),
            input=body)
        assert done.returncode == 0, done.stderr
        return path

    def reset(self):
        """Remove the user's containers, supervisors and terok files."""
        self.podman("rm", "--all", "--force", "--time", "0")
        for pid in pids_mentioning(str(self.state_root)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.run("rm -rf %s %s %s" % tuple(shlex.quote(str(p)) for p in (
            self.state_root, self.containers_conf, self.install_state)))


def ensure_user(name=USER):
    """The test user, made with ``useradd -m`` if it does not exist."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh",
                        name], check=True)
        entry = pwd.getpwnam(name)
    with open("/etc/subuid") as f:
        if not any(line.startswith(name + ":") for line in f):
            raise RuntimeError("%s has no range in /etc/subuid; rootless "
                               "Podman needs one (usermod --add-subuids)"
                               % name)
    return User(entry)


def image_tar():
    """A tar of a busybox-only root file system, built once under build/."""
    tar = BUILD / "busybox-image.tar"
    if tar.exists():
        return tar
    BUILD.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILD) as tmp:
        rootfs = Path(tmp) / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        shutil.copy2(shutil.which("busybox"), rootfs / "bin" / "busybox")
        for name in BUSYBOX_LINKS:
            (rootfs / "bin" / name).symlink_to("busybox")
        part = Path(tmp) / "image.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(part), "."],
                       check=True)
        os.replace(part, tar)
    return tar


def ensure_image(user):
    """Import the busybox image for *user* unless it has it already."""
    if user.podman("image", "exists", IMAGE).returncode == 0:
        return
    with open(image_tar(), "rb") as f:
        done = user.run("podman import - %s" % IMAGE, stdin=f)
    assert done.returncode == 0, "podman import failed: %s" % done.stderr


def wait_for(check, what, timeout_s=10.0):
    """Poll *check* until it returns something true; return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("waited %.0f s for %s" % (timeout_s, what))
        time.sleep(POLL_S)


def wait_for_file(path, timeout_s=10.0):
    return wait_for(Path(path).exists, str(path), timeout_s)


def read_record(root, cid):
    """What the stand-in recorded when it ran for container *cid*."""
    with open(Path(root) / "standin" / ("%s.json" % cid)) as f:
        return json.load(f)


def read_pid_file(root, cid):
    return int((Path(root) / "pids" / ("supervisor-%s.pid" % cid))
               .read_text())


# --- trees the user can read -------------------------------------------------

def _requirement_names(requirements):
    names = []
    for req in requirements or ():
        if "extra" in req.partition(";")[2]:
            continue
        names.append(re.match(r"[A-Za-z0-9._-]+", req.strip()).group(0))
    return names


def _package_requirements():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg.get("options", "install_requires", fallback="").splitlines()
    return _requirement_names(line for line in lines if line.strip())


def _copy_distribution(name, dest, seen):
    """Copy an installed distribution and what it needs into *dest*."""
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return
    seen.add(key)
    dist = importlib.metadata.distribution(name)
    for item in dist.files or ():
        if item.parts[0] == ".." or item.suffix in (".pyc", ".pth"):
            continue
        src = Path(dist.locate_file(item))
        if src.is_file():
            (dest / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / item)
    for dep in _requirement_names(dist.requires):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            _copy_distribution(dep, dest, seen)


def stage_for_user(dest):
    """Copy the installer, its dependencies and the stand-in into *dest*.

    The repository may sit under a folder only root can enter, so the user
    imports ``terok_install`` from ``dest/lib`` and runs ``dest/stand_in``.
    """
    dest = Path(dest)
    lib = dest / "lib"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "terok_install", lib / "terok_install",
                    ignore=skip)
    seen = set()
    for name in _package_requirements():
        _copy_distribution(name, lib, seen)
    shutil.copytree(STAND_IN, dest / "stand_in", ignore=skip)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK)
                   else 0o644)
    return lib, dest / "stand_in" / "terok-sandbox"


@contextlib.contextmanager
def staged_for_user():
    """A root-owned temporary folder everyone can read, with stage_for_user."""
    dest = Path(tempfile.mkdtemp(prefix="terok-e2e-"))
    try:
        yield stage_for_user(dest)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


class UserInstall:
    """``python3 -m terok_install`` run by the user alone, from a staged copy."""

    def __init__(self, user, lib, sandbox_bin):
        self.user = user
        self.lib = lib
        self.sandbox_bin = sandbox_bin

    def python(self, args):
        return "PYTHONPATH=%s python3 %s" % (shlex.quote(str(self.lib)), args)

    def cli(self, *args):
        return self.user.run(self.python(
            "-m terok_install " + shlex.join(args)))

    def install(self):
        return self.cli("install", "--sandbox-bin", str(self.sandbox_bin))

    repair = install

    @property
    def state_root(self):
        return self.user.state_root

    def uninstall(self):
        return self.cli("uninstall")

    def status(self):
        return self.cli("status")

    def remove(self):
        done = self.uninstall()
        assert done.returncode == 0, done.stderr

    def panic(self):
        return self.user.run(self.python(
            "-c 'import sys; from terok_install.panic import main; "
            "sys.exit(main())'"))

    def registered(self):
        conf = self.user.containers_conf
        hooks = str(self.user.state_root / "hooks")
        return conf.exists() and hooks in conf.read_text()


# --- the .deb, installed system-wide ------------------------------------------

SYSTEM_CONF = Path("/etc/containers/containers.conf")
SYSTEM_STATE_ROOT = "/var/lib/terok/sandbox"
SYSTEM_BIN = Path("/usr/local/bin")
PANIC = "/usr/bin/terok-panic"
INSTALLER = "/usr/sbin/terok-install"
BUILD_TIMEOUT_S = 1800
APT_LOCK_TIMEOUT_S = 300


def build_deb():
    """A .deb of the work tree as it is now, built by ./build.sh in build/."""
    dist = BUILD / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    env = dict(os.environ, TEROK_DIST_DIR=str(dist))
    done = subprocess.run(["./build.sh"], cwd=REPO, env=env, text=True,
                          stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, "./build.sh failed:\n" + (
        done.stdout + done.stderr)[-4000:]
    debs = list(dist.glob("terok-sandbox_*_all.deb"))
    assert len(debs) == 1, "./build.sh made %s" % debs
    return debs[0]


def apt_get(*args):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=%d"
                           % APT_LOCK_TIMEOUT_S, *args], env=env, text=True,
                          stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=COMMAND_TIMEOUT_S + APT_LOCK_TIMEOUT_S)
    assert done.returncode == 0, "apt-get %s failed:\n%s" % (
        " ".join(args), (done.stdout + done.stderr)[-4000:])
    return done


def _run_as_root(*argv):
    return subprocess.run(argv, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT_S)


class SystemPackage:
    """The .deb installed with the stand-in as /usr/local/bin/terok-sandbox.

    ``restore()`` purges it and puts back the stand-in's place and
    /etc/containers/containers.conf byte for byte.
    """

    def __init__(self, deb):
        self.deb = Path(deb).resolve()
        self.name = subprocess.run(
            ["dpkg-deb", "--field", str(self.deb), "Package"], check=True,
            capture_output=True, text=True).stdout.strip()
        self.saved_conf = (SYSTEM_CONF.read_bytes() if SYSTEM_CONF.exists()
                           else None)
        self.backup = Path(tempfile.mkdtemp(prefix="terok-e2e-bin-"))
        self.moved = []

    def install(self):
        for name in ("terok-sandbox", "terok_sandbox"):
            target = SYSTEM_BIN / name
            if os.path.lexists(target):
                shutil.move(str(target), str(self.backup / name))
                self.moved.append(name)
            copy = shutil.copytree if (STAND_IN / name).is_dir() \
                else shutil.copy2
            copy(STAND_IN / name, target)
        apt_get("install", "--yes", "--no-install-recommends", str(self.deb))

    def installed(self):
        done = subprocess.run(
            ["dpkg-query", "--show", "--showformat", "${db:Status-Status}",
             self.name], capture_output=True, text=True)
        return done.returncode == 0 and done.stdout not in ("", "not-installed")

    def purge(self):
        if self.installed():
            apt_get("purge", "--yes", self.name)

    remove = purge

    def registered(self):
        return (SYSTEM_CONF.exists()
                and SYSTEM_STATE_ROOT in SYSTEM_CONF.read_text())

    def panic(self):
        return _run_as_root(PANIC)

    def status(self):
        return _run_as_root(INSTALLER, "status")

    def repair(self):
        return _run_as_root(INSTALLER, "install")

    state_root = Path(SYSTEM_STATE_ROOT)

    def restore(self):
        try:
            self.purge()
        finally:
            self._restore_files()

    def _restore_files(self):
        for name in ("terok-sandbox", "terok_sandbox"):
            target = SYSTEM_BIN / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif os.path.lexists(target):
                target.unlink()
            if name in self.moved:
                shutil.move(str(self.backup / name), str(target))
        shutil.rmtree(self.backup, ignore_errors=True)
        if self.saved_conf is None:
            with contextlib.suppress(FileNotFoundError):
                SYSTEM_CONF.unlink()
        else:
            SYSTEM_CONF.write_bytes(self.saved_conf)
