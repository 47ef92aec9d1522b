"""Install and uninstall the supervisor hook.

Order matters because Podman reads the hooks folder at every container
start: scripts and wrapper are in place before any descriptor appears, and
the folder is registered in containers.conf last. Removal runs backwards:
registration, then descriptors, then scripts. containers.conf is checked
before anything is written, so a broken file leaves no descriptor behind.
Installs and uninstalls of one user serialise on a lock beside the record.
"""

import logging
import os
import sys
from dataclasses import dataclass, field

from terok_install import artefacts, containers_conf, fsutil, paths
from terok_install.errors import InstallError
from terok_install.hooks import _supervisor_state as st
from terok_install.record import Record
from terok_install.supervisors import live_supervisors

log = logging.getLogger(__name__)


@dataclass
class Result:
    state_root: str
    hooks_dir: str
    containers_conf: str
    sandbox_bin: "str | None" = None
    changed: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    running: list = field(default_factory=list)


def install_supervisor_hooks(*, hooks_dir=None, sandbox_bin=None, env=None):
    """Lay the hook down under the state root and register its folder."""
    env = os.environ if env is None else env
    layout = layout_for(env, hooks_dir)
    conf = paths.containers_conf(env)
    result = Result(layout.state_root, layout.hooks_dir, conf)
    record_file = paths.record_path(env)
    with fsutil.locked(os.path.dirname(record_file)):
        record = Record.load(record_file)
        entry = record.find(layout.state_root, layout.hooks_dir) or {}
        _refuse_shared(layout)
        lower = _lower_layers(conf, env)
        containers_conf.plan_register(conf, layout.hooks_dir, lower)
        option = sandbox_bin or _still_there(entry.get("sandbox_bin_option"))
        result.sandbox_bin = resolve_sandbox_bin(option, env)
        if result.sandbox_bin is None:
            result.warnings.append(_no_runtime_warning())
        known = bool(entry)
        entry = _entry(entry, layout, conf, option)
        entry["sandbox_bin"] = result.sandbox_bin
        created = []
        try:
            _write_files(layout, result, entry, created)
            record.put(entry)
            record.save()
            _register(record, entry, conf, layout, lower, result)
        except InstallError:
            _roll_back(created, record, entry, known)
            raise
    return result


def _roll_back(created, record, entry, known):
    """Take away what a failed first install made; rewrites stay atomic."""
    for path in sorted(created, key=_removal_order):
        fsutil.remove(path)
    if not known:
        fsutil.remove_empty_dirs(entry["made_dirs"])
        record.drop(entry)
        try:
            record.save()
        except InstallError as exc:
            log.warning("%s", exc)
        fsutil.remove_empty_dirs([os.path.dirname(record.path)])


def _removal_order(path):
    return (not path.endswith(".json"), path)


def uninstall_supervisor_hooks(*, hooks_dir=None, env=None):
    """Take out what install added; keep per-container state."""
    env = os.environ if env is None else env
    layout = layout_for(env, hooks_dir)
    result = Result(layout.state_root, layout.hooks_dir,
                    paths.containers_conf(env))
    record_file = paths.record_path(env)
    with fsutil.locked(os.path.dirname(record_file)):
        record = Record.load(record_file)
        entry = record.find(layout.state_root, layout.hooks_dir)
        if entry is None:
            result.warnings.append(
                "no install of %s is recorded in %s; containers.conf left "
                "as it is" % (layout.hooks_dir, record_file))
        elif entry.get("conf"):
            result.changed.append(containers_conf.unregister(entry["conf"]))
        _remove_files(layout, result, entry or {})
        if entry is not None:
            record.drop(entry)
            record.save()
        # Under the lock: a waiter then finds its folder gone and retries.
        fsutil.remove_empty_dirs([os.path.dirname(record_file)])
    result.running = live_supervisors(env)
    return result


def layout_for(env, hooks_dir):
    root = paths.state_root(env)
    return artefacts.Layout(root, os.path.abspath(hooks_dir)
                            if hooks_dir else None)


def _refuse_shared(layout):
    for folder in {layout.state_root, layout.scripts_dir, layout.hooks_dir}:
        fsutil.check_not_shared(folder)


def _lower_layers(conf, env):
    files = containers_conf.layers(conf, env, paths.is_root())
    return files[:files.index(conf)] if conf in files else files


def _still_there(path):
    return path if path and os.access(path, os.X_OK) else None


def resolve_sandbox_bin(option, env):
    """The terok-sandbox to bake into the wrapper, or None if none found."""
    if option:
        path = os.path.abspath(option)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise InstallError("--sandbox-bin %s: not an executable file"
                               % option)
        return path
    home = None if paths.is_root() else paths.home(env)
    return st.find_sandbox_bin(env, home, os.path.dirname(sys.executable))


def _no_runtime_warning():
    return ("terok-sandbox was not found; the wrapper will look for it "
            "when a container starts. Install it, or run install again "
            "with --sandbox-bin PATH")


def _entry(old, layout, conf, option):
    entry = dict(old)
    entry.update(state_root=layout.state_root, hooks_dir=layout.hooks_dir,
                 containers_conf=conf, interpreter=sys.executable,
                 sandbox_bin_option=option)
    entry.setdefault("made_dirs", [])
    entry.setdefault("opened_modes", {})
    entry.setdefault("conf", None)
    return entry


def _write_files(layout, result, entry, created):
    made = []
    for folder in (layout.pycache, layout.hooks_dir):
        made += fsutil.make_dirs(folder)
    entry["made_dirs"] = sorted(set(entry["made_dirs"]) | set(made))
    if paths.is_root():
        for folder in (layout.pycache, layout.hooks_dir):
            for path, mode in fsutil.open_to_all(folder).items():
                entry["opened_modes"].setdefault(path, mode)
    argv = [result.sandbox_bin] if result.sandbox_bin else None
    files = (artefacts.scripts(layout, argv)
             + artefacts.descriptors(layout, sys.executable))
    for path, data, mode, upto in files:
        existed = os.path.lexists(path)
        if fsutil.atomic_write(path, data, mode, upto):
            result.changed.append(path)
            if not existed:
                created.append(path)


def _register(record, entry, conf, layout, lower, result):
    fsutil.discard_stale_temps(conf)
    registered = containers_conf.hooks_dirs_of(conf) or []
    if layout.hooks_dir in registered and entry["conf"]:
        return
    plan = containers_conf.plan_register(conf, layout.hooks_dir, lower)
    if plan is None:
        return
    # Record the change before making it: a crash in between leaves an
    # entry that the next install or uninstall can still act on.
    entry["conf"] = plan[1]
    record.save()
    try:
        change = containers_conf.register(conf, layout.hooks_dir, lower)
    except InstallError:
        entry["conf"] = None
        record.save()
        raise
    entry["conf"] = change
    record.save()
    result.changed.append(conf)


def _remove_files(layout, result, entry):
    scripts = [layout.wrapper, layout.hook, layout.helper]
    for path in (layout.descriptors() + scripts
                 + artefacts.pyc_files(layout)):
        if fsutil.remove(path):
            result.changed.append(path)
    fsutil.remove_empty_dirs(entry.get("made_dirs", []) + [layout.pycache])
    for folder, mode in entry.get("opened_modes", {}).items():
        _restore_mode(folder, mode)


def _restore_mode(folder, mode):
    try:
        if os.stat(folder).st_mode & 0o7777 == mode | 0o055:
            os.chmod(folder, mode)
    except FileNotFoundError:
        pass
