"""Helpers for test_packages: the built artefacts, host snapshots that
undo package installs, and a cached minimal Debian chroot."""

import fcntl
import glob
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DIST = REPO / "dist"
# What build.sh reads; artefacts older than any of these are rebuilt.
SOURCES = ("build.sh", "setup.cfg", "pyproject.toml", "README.md",
           "debian", "rpm", "man", "packaging", "terok_install")
# Every path a package install, its scripts or rpm may touch.
WATCHED = (
    "/etc/containers", "/var/lib/terok", "/var/lib/terok-sandbox",
    "/var/cache/terok-sandbox", "/usr/lib/terok-sandbox",
    "/usr/libexec/terok-sandbox", "/usr/sbin/terok-install",
    "/usr/bin/terok-panic", "/usr/share/doc/terok-sandbox",
    "/usr/share/licenses", "/usr/share/man/man8/terok-install.8.gz",
    "/usr/share/man/man1/terok-panic.1.gz", "/root/.shiv",
)
STRAY_UNPACKS = ("/tmp/terok-install.pyz_*", "/root/.shiv")
CONF = Path("/etc/containers/containers.conf")
# Shared by every checkout on the host, unlike anything under the repo.
LOCK_DIR = "/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()
LOCK_WAIT_S = 1800


def run(cmd, check=True, timeout=600, **kw):
    """Run *cmd*, output captured; AssertionError with it if it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError("%s exited %d\n%s%s" % (
            cmd, proc.returncode, proc.stdout, proc.stderr))
    return proc


def repo_version():
    text = (REPO / "terok_install" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, re.M).group(1)


def rpm_release():
    text = (REPO / "rpm" / "terok-sandbox.spec").read_text()
    return re.search(r"^Release:\s*(\S+)$", text, re.M).group(1)


@dataclass
class Artefacts:
    folder: Path
    version: str

    @property
    def pyz(self):
        return self.folder / "terok-install.pyz"

    @property
    def panic(self):
        return self.folder / "terok-panic"

    @property
    def deb(self):
        return self.folder / ("terok-sandbox_%s_all.deb" % self.version)

    @property
    def rpm(self):
        return self.folder / ("terok-sandbox-%s-%s.noarch.rpm"
                              % (self.version, rpm_release()))

    def all(self):
        return [self.pyz, self.panic, self.deb, self.rpm]


def build(folder, version=None):
    """Run build.sh into *folder*, optionally as another version."""
    env = dict(os.environ, TEROK_DIST_DIR=str(folder))
    env.pop("TEROK_BUILD_VERSION", None)
    if version:
        env["TEROK_BUILD_VERSION"] = version
    run(["bash", str(REPO / "build.sh")], env=env, cwd=REPO, timeout=900)
    return Artefacts(Path(folder), version or repo_version())


def newest_source_mtime():
    newest = 0.0
    for name in SOURCES:
        for path in [REPO / name] + list((REPO / name).rglob("*")):
            if path.exists() and "__pycache__" not in path.parts:
                newest = max(newest, path.stat().st_mtime)
    return newest


def fresh_dist():
    """dist/ as build.sh makes it, rebuilt if missing or stale."""
    found = Artefacts(DIST, repo_version())
    if not all(p.exists() for p in found.all()) or min(
            p.stat().st_mtime for p in found.all()) < newest_source_mtime():
        build(DIST)
    return found


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- host state ------------------------------------------------------------

def describe(path):
    info = os.lstat(path)
    kind = stat.S_IFMT(info.st_mode)
    if kind == stat.S_IFLNK:
        body = os.readlink(path)
    elif kind == stat.S_IFREG:
        body = sha256(path)
    else:
        body = None
    return (info.st_mode, info.st_uid, info.st_gid, body)


def snapshot(paths=WATCHED):
    """{path: (mode, uid, gid, content hash or link)} under *paths*."""
    found = {}
    for top in paths:
        if not os.path.lexists(top):
            continue
        found[top] = describe(top)
        for folder, dirs, files in os.walk(top):
            for name in dirs + files:
                path = os.path.join(folder, name)
                found[path] = describe(path)
    return found


def stray_unpacks():
    return sorted(p for pattern in STRAY_UNPACKS for p in glob.glob(pattern))


@contextmanager
def host_lock():
    """Serialise package tests of concurrent sessions on this host."""
    with open(os.path.join(LOCK_DIR, "terok-sandbox-tests.lock"), "a") as f:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("another session holds %s" % f.name)
                time.sleep(1)
        yield


class Host:
    """Backs the watched paths up and puts them back, packages gone."""

    def __init__(self, backup):
        self.backup = Path(backup)
        self.existed = [p for p in WATCHED if os.path.lexists(p)]
        for path in self.existed:
            copy(path, self.backup / path.lstrip("/"))
        self.before = snapshot()

    def restore(self):
        purge_deb()
        if snapshot() == self.before:
            return
        for path in WATCHED:
            remove(path)
        for path in self.existed:
            copy(self.backup / path.lstrip("/"), path)

    def write_conf(self, data):
        """Put *data* (bytes, or None for no file) in containers.conf."""
        if data is None:
            remove(CONF)
        else:
            CONF.parent.mkdir(parents=True, exist_ok=True)
            CONF.write_bytes(data)


def copy(src, dst):
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    if os.path.isdir(src) and not os.path.islink(src):
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def installed_version():
    proc = run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}",
                "terok-sandbox"], check=False)
    return proc.stdout if proc.returncode == 0 else None


def purge_deb():
    """Purge terok-sandbox from dpkg, even with failing scripts."""
    if installed_version() is None:
        return
    if run(["dpkg", "--purge", "terok-sandbox"], check=False).returncode:
        for script in ("prerm", "postrm"):
            path = Path("/var/lib/dpkg/info/terok-sandbox." + script)
            if path.exists():
                path.write_text("#!/bin/sh\nexit 0\n")
        run(["dpkg", "--purge", "--force-remove-reinstreq",
             "terok-sandbox"])


# --- a minimal Debian for the dependency check ------------------------------

def bookworm_mirror():
    """The Debian archive apt already uses for bookworm, or None."""
    for text in _source_files():
        for entry in _deb822(text) + _one_line(text):
            if "deb" in entry["types"] and "bookworm" in entry["suites"]:
                return entry["uris"][0]
    return None


def _source_files():
    files = ["/etc/apt/sources.list"]
    files += sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    files += sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    for name in files:
        if os.path.isfile(name):
            yield Path(name).read_text(errors="replace")


def _deb822(text):
    entries = []
    for block in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([\w-]+):[ \t]*(.*)$", block, re.M))
        if "URIs" in fields and fields.get("Enabled", "yes") != "no":
            entries.append({"types": fields.get("Types", "").split(),
                            "uris": fields["URIs"].split(),
                            "suites": fields.get("Suites", "").split()})
    return entries


def _one_line(text):
    entries = []
    pattern = r"^(deb)\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)"
    for kind, uri, suite in re.findall(pattern, text, re.M):
        entries.append({"types": [kind], "uris": [uri], "suites": [suite]})
    return entries


def mounts_under(root):
    """Mount points at or below *root*, from this process's mount table."""
    root = os.path.realpath(root)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == root or p.startswith(root + "/")]


def unmount_under(root):
    for point in sorted(mounts_under(root), reverse=True):
        run(["umount", "--lazy", point], check=False)


def bookworm_chroot(cache):
    """A cached ``debootstrap --variant=minbase bookworm`` tree."""
    cache = Path(cache)
    if (cache / "etc" / "debian_version").exists():
        return cache
    mirror = bookworm_mirror()
    if mirror is None:
        return None
    partial = cache.with_name(cache.name + ".partial")
    remove(partial)
    try:
        run(["debootstrap", "--variant=minbase", "bookworm", str(partial),
             mirror], timeout=1200)
    finally:
        unmount_under(partial)
    partial.rename(cache)
    return cache
