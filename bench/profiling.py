"""Where the time of the hook and of terok-panic goes (``--profile``).

Four views, each a text section after the table: ``-X importtime``
against the bare interpreter's own imports; a split of the hook's wall
time into start-up, helper import, script compile and work; an strace
timeline of one run; and py-spy's hottest functions over many runs, when
a py-spy binary was found.
"""

import collections
import os
import re
import statistics

import hook_runs
import procs
import timing

IMPORT_RUNS = 9
SPLIT_RUNS = 15
SPY_RUNS = 40
SPY_RATE = 2000
TOP = 10
IMPORTTIME = ["-X", "importtime"]
OURS = ("supervisor_hook.py", "_supervisor_state.py", "panic.py",
        "terok_install/")
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def section(title, text):
    return {"profile": title, "text": text}


def worker_sections(worker):
    """The profile sections of the hook and panic rows, as dicts."""
    hook, tmp = worker.hook, worker.tmp
    out = os.path.join(tmp, "profile.out")
    bare = import_runs(timing.PYTHON, timing.BARE[:1] + IMPORTTIME
                       + timing.BARE[1:], {}, out)
    if hook:
        for stage in hook_runs.STAGES:
            yield section("-X importtime, %s hook" % stage, import_report(
                hook_imports(hook, stage, out), bare))
        yield section("wall time split of the hook", split_report(hook))
        yield section("strace, one poststop run", strace_poststop(hook, tmp))
    for panic in worker.panics:
        yield section("-X importtime, %s" % panic.name, import_report(
            import_runs(timing.PYTHON, panic.argv(IMPORTTIME),
                        panic_env(panic, worker), out), bare))
    spy = worker.cfg.get("py_spy")
    if spy and hook:
        yield section("py-spy, createRuntime hook x%d" % SPY_RUNS,
                      spy_hook(spy, hook, tmp))
    if spy and worker.scene:
        yield section("py-spy, terok-panic over 1000 trees",
                      spy_panic(spy, worker, tmp))


# --- -X importtime -------------------------------------------------------

def parse_imports(text):
    """{module: (self us, cumulative us, depth)} from -X importtime."""
    found = {}
    for line in text.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            found[match.group(4)] = (int(match.group(1)),
                                     int(match.group(2)),
                                     len(match.group(3)) // 2)
    return found


def import_runs(path, argv, env, out, stdin=os.devnull, setup=None):
    """Per module, the medians over IMPORT_RUNS runs."""
    runs = []
    for _ in range(IMPORT_RUNS):
        open(out, "w").close()
        if setup:
            setup()
        timing.run(path, argv, env() if callable(env) else env,
                   stdin=stdin, out=out)
        with open(out, errors="replace") as f:
            runs.append(parse_imports(f.read()))
    return {name: tuple(statistics.median(r[name][i] for r in runs
                                          if name in r) for i in range(3))
            for name in runs[-1]}


def hook_imports(hook, stage, out):
    cid = hook_runs.new_cid()
    sidecar = hook.sidecar(cid, {})
    path, argv, env = hook.command(stage, cid, sidecar, os.getpid())
    argv = argv[:1] + IMPORTTIME + argv[1:]
    found = import_runs(path, argv, env, hook.out, hook.stdin,
                        setup=lambda: _clear(hook, cid))
    _clear(hook, cid)
    hook.forget(cid)
    return found


def _clear(hook, cid):
    try:
        procs.kill_groups([hook.pgid(cid)])
    except timing.Failed:
        pass
    try:
        os.unlink(hook.pid_file(cid))
    except FileNotFoundError:
        pass


def import_report(found, bare):
    own = {n: v for n, v in found.items() if n not in bare}
    start = sum(v[1] for v in bare.values() if v[2] == 0)
    lines = ["interpreter start-up imports (as bare): %.2f ms"
             % (start / 1e3),
             "imports beyond bare: %.2f ms" % (sum(
                 v[1] for v in own.values() if v[2] == 0) / 1e3),
             "%-40s %9s %9s" % ("module (beyond bare)", "self ms", "cum ms")]
    for name, (own_us, cum_us, depth) in sorted(
            own.items(), key=lambda kv: -kv[1][1])[:TOP]:
        lines.append("%-40s %9.2f %9.2f" % ("  " * depth + name,
                                            own_us / 1e3, cum_us / 1e3))
    return "\n".join(lines)


def panic_env(panic, worker):
    scene = worker.scene
    if scene is None:
        return panic.environ(worker.tmp, os.devnull, worker.tmp)
    return panic.environ(scene.forest.root, scene.record, scene.home)


# --- where the hook's wall time goes -----------------------------------------

def split_report(hook):
    """Medians of start-up, helper import, script compile and full runs."""
    helper_dir = os.path.dirname(hook.script)
    python = [timing.PYTHON, "-I", "-S", "-c"]
    variants = [
        ("bare: -I -S -c pass", timing.bare),
        ("import _supervisor_state", lambda: timing.run(
            timing.PYTHON, python + ["import sys; sys.path.insert(0, %r); "
                                     "import _supervisor_state" % helper_dir],
            {})[0]),
        ("compile supervisor_hook.py", lambda: timing.run(
            timing.PYTHON, python + ["p = %r; compile(open(p, 'rb').read(), "
                                     "p, 'exec')" % hook.script], {})[0]),
        ("createRuntime hook", lambda: hook_runs.create_once(hook)),
        ("poststop hook, cooperative", lambda: hook_runs.reap_once(hook, {})),
    ]
    times = collections.defaultdict(list)
    for i in range(SPLIT_RUNS):
        for name, run in variants[i % len(variants):] + \
                variants[:i % len(variants)]:
            times[name].append(run())
    base = statistics.median(times[variants[0][0]])
    lines = ["hooks/__pycache__ present: %s" % os.path.isdir(os.path.join(
        helper_dir, "__pycache__"))]
    for name, _ in variants:
        med = statistics.median(times[name])
        lines.append("%-32s %7.2f ms  (+%.2f over bare)"
                     % (name, med * 1e3, (med - base) * 1e3))
    return "\n".join(lines)


# --- strace ------------------------------------------------------------------

def strace_poststop(hook, tmp):
    trace = os.path.join(tmp, "poststop.strace")
    cid, sidecar, pgid = hook.start({})
    hook.standin(cid)
    path, argv, env = hook.command("poststop", cid, sidecar)
    try:
        timing.run("/usr/bin/strace", ["strace", "-ttt", "-o", trace, path]
                   + argv[1:], env, stdin=hook.stdin, out=hook.out)
    except OSError as exc:
        return "strace cannot run: %s" % exc
    finally:
        procs.kill_groups([pgid])
        hook.forget(cid)
    with open(trace) as f:
        return timeline(f.read().splitlines())


def timeline(lines):
    """Milestones of an ``strace -ttt`` trace, in ms from its first line."""
    first = float(lines[0].split()[0])
    counts = collections.Counter()
    marks = []
    for line in lines:
        stamp, _, call = line.partition(" ")
        name = call.split("(", 1)[0]
        counts[name] += 1
        at = (float(stamp) - first) * 1e3
        if name in ("kill", "exit_group") or (
                name == "openat" and ".py\"" in call):
            marks.append("%8.2f ms  %s" % (at, call[:90]))
    sleeps = counts["clock_nanosleep"] + counts["nanosleep"] + \
        counts["select"]
    proc_opens = sum(1 for line in lines if 'openat(AT_FDCWD, "/proc/' in line)
    head = ["%d syscalls; %d opens under /proc; %d sleeps while waiting"
            % (len(lines), proc_opens, sleeps),
            "(strace slows every syscall; read the order, not the sizes)"]
    return "\n".join(head + marks)


# --- py-spy ------------------------------------------------------------------

def spy(py_spy, path, argv, env, raw, stdin=os.devnull):
    """Run *argv* under py-spy record; True if it wrote samples."""
    command = [py_spy, "record", "--nonblocking", "-r", str(SPY_RATE),
               "-f", "raw", "-o", raw, "--", path] + argv[1:]
    timing.run(py_spy, command, env, stdin=stdin, out=raw + ".log")
    return os.path.exists(raw)


def hot_functions(raw_files):
    """Where py-spy's samples fell: leaf functions, and our own frames
    with everything they called."""
    total = 0
    leaves, ours = collections.Counter(), collections.Counter()
    for raw in raw_files:
        with open(raw) as f:
            for line in f:
                stack, _, n = line.rstrip().rpartition(" ")
                frames = [fr for fr in stack.split(";") if fr.strip()]
                if not frames:
                    continue
                total += int(n)
                leaves[frames[-1]] += int(n)
                for frame in set(frames):
                    if any(name in frame for name in OURS):
                        ours[frame] += int(n)
    lines = ["%d samples at %d Hz; leaf functions:" % (total, SPY_RATE)]
    lines += _shares(leaves, total)
    lines.append("our functions, with what they call:")
    return "\n".join(lines + _shares(ours, total))


def _shares(counts, total):
    return ["%5.1f%%  %s" % (100.0 * n / total, frame[:100])
            for frame, n in counts.most_common(TOP)]


def spy_hook(py_spy, hook, tmp):
    raws = []
    for i in range(SPY_RUNS):
        cid = hook_runs.new_cid()
        path, argv, env = hook.command("createRuntime", cid,
                                       hook.sidecar(cid, {}), os.getpid())
        raw = os.path.join(tmp, "spy-create-%d.txt" % i)
        if spy(py_spy, path, argv, env, raw, hook.stdin):
            raws.append(raw)
        _clear(hook, cid)
        hook.forget(cid)
    return hot_functions(raws) if raws else "py-spy recorded nothing"


def spy_panic(py_spy, worker, tmp):
    panic, scene = worker.panics[0], worker.scene
    raw = os.path.join(tmp, "spy-panic.txt")
    scene.forest.grow(1000)
    try:
        spy(py_spy, timing.PYTHON, panic.argv(), panic_env(panic, worker),
            raw)
    finally:
        scene.forest.clear()
    return hot_functions([raw]) if os.path.exists(raw) else \
        "py-spy recorded nothing"


def host_sections(python, source, stand_in, py_spy, tmp):
    """-X importtime and py-spy of ``terok-install install`` from source."""
    out = os.path.join(tmp, "install.out")
    argv = [python, "-m", "terok_install", "install", "-q", "--sandbox-bin",
            stand_in]
    bare = import_runs(python, [python] + IMPORTTIME + ["-c", "pass"], {},
                       out)
    count = iter(range(1 << 30))
    found = import_runs(
        python, argv[:1] + IMPORTTIME + argv[1:],
        lambda: install_env(source, tmp, next(count)), out)
    yield section("-X importtime, install from the source",
                  import_report(found, bare))
    if py_spy:
        raw = os.path.join(tmp, "spy-install.txt")
        spy(py_spy, python, argv, install_env(source, tmp, "spy"), raw)
        yield section("py-spy, install from the source",
                      hot_functions([raw]) if os.path.exists(raw)
                      else "py-spy recorded nothing")


def install_env(source, tmp, n):
    """The environment of an install into a state root of its own."""
    folder = os.path.join(tmp, "install-%s" % n)
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": source, "HOME": folder,
            "TEROK_SANDBOX_STATE_DIR": os.path.join(folder, "state"),
            "CONTAINERS_CONF": os.path.join(folder, "c.conf"),
            "TEROK_INSTALL_RECORD": os.path.join(folder, "rec.json"),
            "TEROK_CONFIG_FILE": os.path.join(folder, "none.yml")}
