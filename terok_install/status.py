"""Check that an install is complete, current, registered and usable."""

import os
import stat
import sys
from dataclasses import dataclass

from terok_install import artefacts, containers_conf, fsutil, paths
from terok_install.errors import InstallError
from terok_install.installer import (
    layout_for, resolve_sandbox_bin)
from terok_install.supervisors import live_supervisors
from terok_install.record import Record


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def check(*, hooks_dir=None, env=None):
    """(checks, live container ids) for the install this env points at."""
    env = os.environ if env is None else env
    layout = layout_for(env, hooks_dir)
    conf = paths.containers_conf(env)
    entry = Record.load(paths.record_path(env)).find(
        layout.state_root, layout.hooks_dir) or {}
    interpreter = entry.get("interpreter") or sys.executable
    checks = [_root_check(layout)]
    sandbox = _sandbox_check(entry, env, checks)
    argv = [sandbox] if sandbox else None
    for path, data, mode, upto in (
            artefacts.scripts(layout, argv)
            + artefacts.descriptors(layout, interpreter)):
        checks.append(_file_check(path, data, mode, upto))
    checks.append(_registration_check(layout, conf, env))
    checks.append(_interpreter_check(interpreter))
    return checks, live_supervisors(env)


def _root_check(layout):
    ok = os.path.isdir(layout.state_root)
    return Check("state root", ok, layout.state_root if ok else
                 "%s is missing; run 'terok-install install'"
                 % layout.state_root)


def _sandbox_check(entry, env, checks):
    """The runtime install baked in, if still there, else a fresh lookup:
    the operator's PATH here may differ from the one install ran with."""
    found = entry.get("sandbox_bin")
    if not (found and os.access(found, os.X_OK)):
        try:
            found = resolve_sandbox_bin(entry.get("sandbox_bin_option"), env)
        except InstallError as exc:
            checks.append(Check("terok-sandbox", False, str(exc)))
            return None
    checks.append(Check("terok-sandbox", found is not None, found or
                        "not found on PATH, next to the interpreter or in "
                        "~/.local/bin; install terok-sandbox"))
    return found


def _file_check(path, data, mode, upto):
    name = os.path.basename(path)
    if fsutil.same_file(path, data, mode, upto):
        return Check(name, True, path)
    if not os.path.lexists(path):
        problem = "is missing"
    else:
        found = stat.S_IMODE(os.lstat(path).st_mode)
        problem = ("has mode %o, expected %o" % (found, mode)
                   if fsutil.same_file(path, data, found, upto)
                   else "differs from what install writes")
    return Check(name, False, "%s %s; run 'terok-install install'"
                 % (path, problem))


def _registration_check(layout, conf, env):
    files = containers_conf.layers(conf, env, paths.is_root())
    effective = containers_conf.effective_hooks_dirs(files)
    if layout.hooks_dir in effective:
        return Check("registered", True, "%s in hooks_dir" % layout.hooks_dir)
    setter = [f for f in files if containers_conf.hooks_dirs_of(f) is not None]
    where = " (set last by %s)" % setter[-1] if setter else ""
    return Check("registered", False, "%s is not in the effective hooks_dir"
                 "%s; run 'terok-install install'" % (layout.hooks_dir, where))


def _interpreter_check(interpreter):
    ok = os.path.isfile(interpreter) and os.access(interpreter, os.X_OK)
    return Check("interpreter", ok, interpreter if ok else
                 "%s is gone; run 'terok-install install' with a working "
                 "python3" % interpreter)
