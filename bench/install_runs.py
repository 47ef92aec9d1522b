"""``terok-install install`` from the source and from the zipapp, each
into a fresh state root, and the sizes of what build.sh makes."""

import glob
import os
import shutil
import tempfile

import timing
from stage import REPO, TRUSTED_ENV, deps_python
from table import MIB, check, sized, skipped, timed
from timing import PYTHON, Failed

STAND_IN = os.path.join(REPO, "tests", "stand_in", "terok-sandbox")
PYZ = "terok-install.pyz"
PYZ_LIMIT = 1.5 * MIB
# (full, --quick) repetitions
REPS = {"install": (9, 5), "zipapp": (9, 3)}


class Installs:
    """Fresh folders for one install each, under *top*."""

    def __init__(self, top, quick):
        self.top = top
        self.quick = quick

    def reps(self, kind):
        return REPS[kind][1 if self.quick else 0]

    def once(self, argv, extra):
        """Seconds of one install into a new state root."""
        folder = tempfile.mkdtemp(dir=self.top)
        try:
            env = dict(TRUSTED_ENV, **extra)
            env.update(TEROK_SANDBOX_STATE_DIR=os.path.join(folder, "state"),
                       CONTAINERS_CONF=os.path.join(folder, "c.conf"),
                       TEROK_INSTALL_RECORD=os.path.join(folder, "rec.json"),
                       TEROK_CONFIG_FILE=os.path.join(folder, "none.yml"),
                       HOME=folder)
            out = os.path.join(folder, "out")
            seconds, code = timing.run(argv[0], argv, env, out=out)
            if code != 0:
                with open(out, errors="replace") as f:
                    said = f.read()[-300:]
                raise Failed("install exited %d: %s" % (code, said))
            return seconds
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def install_argv(python, *head):
    return [python, *head, "install", "-q", "--sandbox-bin", STAND_IN]


def source_row(runs, source):
    python = deps_python()
    venv = python and python.startswith(os.path.join(REPO, ".venv"))
    label = "install, from the venv" if venv else "install, from the source"
    if python is None:
        return skipped(label, "no interpreter here imports jinja2, tomlkit "
                       "and PyYAML; make .venv (see README)")
    argv = install_argv(python, "-m", "terok_install")
    times, base = timing.interleave(runs.reps("install"), lambda: runs.once(
        argv, {"PYTHONPATH": source}))
    return timed(label, times, base, note="%s -m terok_install"
                 % os.path.relpath(python, REPO))


def shown(path):
    """*path* as the table shows it: relative to the repository if inside."""
    inside = os.path.commonpath([REPO, path]) == REPO
    return os.path.relpath(path, REPO) if inside else os.path.basename(path)


def zipapp_rows(runs, dist):
    pyz = os.path.join(dist, PYZ)
    if not os.path.exists(pyz):
        why = "%s is missing; run ./build.sh" % shown(pyz)
        return [skipped("install, zipapp first run", why,
                        "<= 2x a later run"),
                skipped("install, zipapp later run", why)]
    argv = install_argv(PYTHON, pyz)

    def first():
        root = tempfile.mkdtemp(dir=runs.top)
        try:
            return runs.once(argv, {"SHIV_ROOT": root})
        finally:
            shutil.rmtree(root, ignore_errors=True)

    warm = tempfile.mkdtemp(dir=runs.top)
    runs.once(argv, {"SHIV_ROOT": warm})
    # What earlier rows left for the disk to write must not slow down
    # only the runs that unpack.
    os.sync()
    (cold, hot), base = timing.in_turns(runs.reps("zipapp"), [
        first, lambda: runs.once(argv, {"SHIV_ROOT": warm})])
    shutil.rmtree(warm, ignore_errors=True)
    ratio = timing.median(cold) / timing.median(hot)
    stale = stale_note(pyz)
    return [timed("install, zipapp first run", cold, base,
                  "<= 2x a later run", check("first / later", ratio, 2.0),
                  "fresh SHIV_ROOT each run, in turns with later runs"
                  + stale),
            timed("install, zipapp later run", hot, base,
                  note="warm SHIV_ROOT" + stale)]


def stale_note(path):
    sources = glob.glob(os.path.join(REPO, "terok_install", "**", "*.py*"),
                        recursive=True)
    newest = max((os.path.getmtime(p) for p in sources), default=0)
    if os.path.getmtime(path) < newest:
        return "; %s is older than terok_install/: rerun ./build.sh" % (
            shown(path))
    return ""


def size_rows(dist):
    pyz = os.path.join(dist, PYZ)
    rows = []
    if os.path.exists(pyz):
        size = os.path.getsize(pyz)
        rows.append(sized("zipapp size", size, "<= 1.5 MiB",
                          check("MiB", size / MIB, PYZ_LIMIT / MIB),
                          "%d bytes" % size))
    else:
        rows.append(skipped("zipapp size", "%s is missing; run ./build.sh"
                            % shown(pyz), "<= 1.5 MiB"))
    extras = [os.path.join(dist, "terok-panic")] + sorted(
        glob.glob(os.path.join(dist, "terok-sandbox_*_all.deb")))
    for path in extras:
        if os.path.exists(path):
            rows.append(sized(shown(path) + " size", os.path.getsize(path),
                              note="%d bytes" % os.path.getsize(path)))
    return rows
