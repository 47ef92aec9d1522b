"""Benchmarks: the hook pair, terok-panic, the installer, the zipapp and
rootless Podman, each as the median of repeated runs and its ratio to a
bare ``/usr/bin/python3 -I -S -c pass`` timed in turns with it.

    python3 bench/run.py [--quick] [--only ROW,...] [--profile] [--json FILE]

Run from the repository root, as root for every row (Podman needs a user
of its own; everything else also runs as a user). The installer needs
jinja2, tomlkit and PyYAML, from the interpreter that runs the bench or
else from ``.venv/bin/python``. Rows whose artefact is missing (``dist/*``
from ./build.sh, ``terok_install/panic.py``) are skipped with a note. The
hook and panic rows run in a private PID and user namespace (see
worker.py). A full run takes about four minutes on two cores, ``--profile``
adds one, ``--quick`` takes under two. Nothing here asserts a target.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile

import install_runs
import podman_runs
import profiling
import stage as staging
import table
from timing import Failed

ROWS = {
    "create": "createRuntime hook, stand-in runtime",
    "poststop": "poststop reap of a cooperative supervisor (and +5000 "
                "processes)",
    "stubborn": "poststop reap of a supervisor that ignores SIGTERM",
    "panic": "terok-panic over 1 to 1000 trees, quiet and with 5000 "
             "bystanders",
    "install": "terok-install install from the source or venv",
    "zipapp": "dist/terok-install.pyz, fresh and warm SHIV_ROOT",
    "size": "sizes of dist/terok-install.pyz, terok-panic and the .deb",
    "podman": "podman run --rm, supervised and plain, rootless",
}
WORKER_ROWS = {"create", "poststop", "stubborn", "panic"}
PY_SPY = os.path.join(staging.REPO, "build", "py-spy", "bin", "py-spy")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__.split("\n\n")[0],
        epilog="rows: " + "; ".join("%s = %s" % kv for kv in ROWS.items()))
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions")
    parser.add_argument("--only", metavar="ROW[,ROW...]",
                        help="run only these rows (see below)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the hook, panic and the installer")
    parser.add_argument("--json", metavar="FILE",
                        help="write every row, with its samples, to FILE")
    parser.add_argument("--source", metavar="DIR", default=staging.REPO,
                        help="take terok_install/ from DIR, e.g. a patched "
                             "copy (default: this repository)")
    parser.add_argument("--dist", metavar="DIR", default=staging.DIST,
                        help="take the zipapp, terok-panic and the .deb "
                             "from DIR (default: dist/)")
    args = parser.parse_args(argv)
    args.rows = set(args.only.split(",")) if args.only else set(ROWS)
    unknown = args.rows - set(ROWS)
    if unknown:
        parser.error("unknown row(s) %s; choose from %s"
                     % (", ".join(sorted(unknown)), ", ".join(ROWS)))
    args.source = os.path.abspath(args.source)
    args.dist = os.path.abspath(args.dist)
    return args


def worker_results(stage, args):
    """Rows and profile sections from the namespaced worker."""
    isolated = staging.can_isolate()
    if not isolated:
        say("no private namespaces here (unshare -r -p failed); the hook "
            "rows run in the open")
    config = stage.config(args.rows & WORKER_ROWS, args.quick, args.profile,
                          isolated, spy_copy(stage, args.profile))
    proc = staging.start_worker(stage, config, isolated)
    try:
        for line in proc.stdout:
            yield json.loads(line)
    finally:
        staging.stop_worker(proc)
    if proc.returncode:
        raise Failed("the worker exited %d; see its messages above"
                     % proc.returncode)


def spy_copy(stage, profile):
    """py-spy copied into the stage, if profiling and one is found."""
    found = PY_SPY if os.path.exists(PY_SPY) else shutil.which("py-spy")
    if not (profile and found):
        return None
    return shutil.copy2(found, stage.path("py-spy"))


def host_rows(stage, args):
    runs = install_runs.Installs(stage.path("work"), args.quick)
    if "install" in args.rows:
        yield attempt("install, from the source",
                      lambda: install_runs.source_row(runs, args.source))
    if "zipapp" in args.rows:
        yield from attempt_many("install, zipapp",
                                lambda: install_runs.zipapp_rows(
                                    runs, stage.dist))
    if "size" in args.rows:
        yield from install_runs.size_rows(stage.dist)
    if "podman" in args.rows:
        say("podman: preparing the user %s" % podman_runs.USER)
        yield from podman_runs.rows(stage, args.quick)


def attempt(label, make):
    try:
        return make()
    except Failed as exc:
        return table.skipped(label, str(exc))


def attempt_many(label, make):
    try:
        return make()
    except Failed as exc:
        return [table.skipped(label, str(exc))]


def host_profile(stage, args):
    python = staging.deps_python()
    if python is None:
        return []
    tmp = tempfile.mkdtemp(dir=stage.path("work"))
    return list(profiling.host_sections(
        python, args.source, install_runs.STAND_IN,
        PY_SPY if os.path.exists(PY_SPY) else shutil.which("py-spy"), tmp))


def say(text):
    sys.stderr.write("bench: %s\n" % text)
    sys.stderr.flush()


def collect(args):
    """(rows, profile sections), whatever stopped the run."""
    rows, sections = [], []
    stage = staging.Stage(args.source, args.dist)
    try:
        if args.rows & WORKER_ROWS or args.profile:
            try:
                for item in worker_results(stage, args):
                    (sections if "profile" in item else rows).append(item)
            except Failed as exc:
                rows.append(table.skipped("(worker)", str(exc)))
        for row in host_rows(stage, args):
            if table.progress(row):
                say(table.progress(row))
            rows.append(row)
        if args.profile:
            sections += host_profile(stage, args)
    except KeyboardInterrupt:
        rows.append(table.skipped("(interrupted)", "stopped by a signal; "
                                  "rows after this point did not run"))
    finally:
        stage.close()
    return rows, sections


def interrupt(signum, _frame):
    raise KeyboardInterrupt(signum)


def main(argv=None):
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    load = os.getloadavg()[0]
    rows, sections = collect(args)
    print(table.render(rows))
    print("host: %d cores; load average %.1f at the start, %.1f at the end"
          % (os.cpu_count(), load, os.getloadavg()[0]))
    for item in sections:
        print("\n== %s ==\n%s" % (item["profile"], item["text"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "profile": sections}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
