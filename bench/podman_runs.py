"""``podman run --rm`` of busybox ``true``, supervised and plain, as a
rootless user of its own (not the end-to-end tests' user, so the two can
run side by side). The user and its image come from tests/podman_support.py;
the per-user install and podman_timer.py run as that user.
"""

import json
import os
import shlex
import sys

from stage import REPO
from table import check, skipped, timed
from timing import Failed

USER = "terok-bench"
# (timed rounds, warm-up rounds), full and --quick
REPS = ((21, 2), (5, 1))
SUPERVISED = "podman run --rm, supervised"
PLAIN = "podman run --rm, plain"
TARGET = "<= 1.25x plain"
STARTED = "createRuntime: supervisor started"


def support():
    """tests/podman_support.py, or why it cannot be used."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    try:
        import podman_support
    except ImportError as exc:
        return None, "tests/podman_support.py cannot be imported (%s)" % exc
    return podman_support, podman_support.skip_reason()


def rows(stage, quick):
    ps, why = support()
    if why is None and stage.hook_skip:
        why = stage.hook_skip
    if why:
        return [skipped(SUPERVISED, why, TARGET), skipped(PLAIN, why)]
    try:
        return measure(ps, stage, *REPS[1 if quick else 0])
    except (Failed, AttributeError, AssertionError) as exc:
        why = "%s: %s" % (type(exc).__name__, exc)
        return [skipped(SUPERVISED, why, TARGET), skipped(PLAIN, why)]


def measure(ps, stage, reps, warmups):
    user = ps.ensure_user(USER)
    ps.ensure_image(user)
    user.reset()
    # Podman and the installer both read only the user's own file, so a
    # containers.conf that tests elsewhere on the host break cannot leak in.
    env = "CONTAINERS_CONF=%s PYTHONPATH=%s" % (
        shlex.quote(str(user.containers_conf)),
        shlex.quote(stage.path("lib")))
    try:
        cli(user, env, "install", "--sandbox-bin", stage.stand_in)
        sidecar = user.write_sidecar({}, name="bench.json")
        times = run_timer(ps, user, stage, env, sidecar, reps, warmups)
        started = hook_starts(user)
        left = ps.pids_mentioning(str(sidecar))
    finally:
        cli(user, env, "uninstall", check=False)
        user.reset()
    if started < reps + warmups:
        raise Failed("the hook started %d supervisors for %d supervised "
                     "runs" % (started, reps + warmups))
    return table_rows(times, started, left)


def cli(user, env, *args, check=True):
    done = user.run("%s python3 -m terok_install %s" % (env, shlex.join(
        args)))
    if check and done.returncode != 0:
        raise Failed("terok-install %s as %s failed: %s"
                     % (args[0], USER, done.stderr[-300:]))


def run_timer(ps, user, stage, env, sidecar, reps, warmups):
    argv = ["python3", "-I", "-S", stage.path("bench", "podman_timer.py"),
            str(reps), str(warmups), ps.IMAGE, str(sidecar), ps.ANNOTATION,
            *ps.RUN_FLAGS]
    done = user.run("%s %s" % (env, shlex.join(argv)),
                    timeout=60 + 10 * reps)
    if done.returncode != 0:
        raise Failed("podman_timer.py failed: %s" % done.stderr[-300:])
    return json.loads(done.stdout)


def hook_starts(user):
    try:
        with open(os.path.join(user.state_root, "logs", "hook.log")) as f:
            return sum(STARTED in line for line in f)
    except OSError:
        return 0


def table_rows(times, started, left):
    base = times["bare"]
    plain = timed(PLAIN, times["plain"], base,
                  note="rootless, runc, --network none, busybox true")
    supervised = timed(SUPERVISED, times["supervised"], base, TARGET)
    ratio = supervised["median_s"] / plain["median_s"]
    supervised["check"] = check("supervised / plain", ratio, 1.25)
    supervised["note"] = "+%.1f ms per container; hook.log shows %d " \
        "supervisor starts; %d process(es) named the sidecar afterwards" % (
            (supervised["median_s"] - plain["median_s"]) * 1e3, started,
            len(left))
    return [supervised, plain]
