"""Register a hooks folder in containers.conf, and take it out again exactly.

Podman uses the ``[engine] hooks_dir`` of the highest layer that sets it and
ignores every lower one, so a file that sets no ``hooks_dir`` yet is seeded
with what the lower layers gave (Podman's default folder when none sets
it): registering must never switch off another package's hooks.

``register`` returns a record of what it changed; ``unregister`` uses it to
put the file back byte for byte when nobody edited it since, and otherwise
takes out only what was added, keeping the operator's edits.
"""

import glob
import logging
import os
import stat

import tomlkit
from tomlkit.exceptions import TOMLKitError

from terok_install import fsutil
from terok_install.errors import ContainersConfError

log = logging.getLogger(__name__)

DEFAULT_HOOKS_DIRS = ("/usr/share/containers/oci/hooks.d",)
SYSTEM_LAYERS = ("/usr/share/containers/containers.conf",
                 "/etc/containers/containers.conf")
SYSTEM_DROPINS = "/etc/containers/containers.conf.d"


def layers(conf_path, env, is_root):
    """The files Podman reads for this user, lowest first."""
    if env.get("CONTAINERS_CONF"):
        return [conf_path]
    files = list(SYSTEM_LAYERS) + _dropins(SYSTEM_DROPINS)
    if not is_root:
        user_conf = conf_path
        files += [user_conf] + _dropins(user_conf + ".d")
    return files


def _dropins(folder):
    return sorted(glob.glob(os.path.join(glob.escape(folder), "*.conf")))


def hooks_dirs_of(path):
    """The hooks_dir list a file sets, or None; unreadable files set none."""
    text = _read_text(path, strict=False)
    if text is None:
        return None
    try:
        return _hooks_dirs(path, tomlkit.parse(text))
    except (ContainersConfError, TOMLKitError, ValueError):
        return None


def effective_hooks_dirs(files):
    """What Podman ends up with after reading *files* in order."""
    found = list(DEFAULT_HOOKS_DIRS)
    for path in files:
        dirs = hooks_dirs_of(path)
        if dirs is not None:
            found = dirs
    return found


def register(path, hooks_dir, lower_layers):
    """Append *hooks_dir* to the file's hooks_dir; a record, or None if
    it was registered already. Raises ContainersConfError, changing nothing.
    """
    plan = plan_register(path, hooks_dir, lower_layers)
    if plan is None:
        return None
    text, change = plan
    change["made_dirs"] = fsutil.make_dirs(os.path.dirname(path))
    write(path, text)
    return change


def plan_register(path, hooks_dir, lower_layers):
    """(new text, change record) for registering, or None if nothing to do."""
    original = _read_text(path, strict=True)
    _check_writable(path)
    doc = parse(path, original or "")
    current = _hooks_dirs(path, doc)
    if current is not None and hooks_dir in current:
        return None
    change = {"path": path, "original": original, "added": hooks_dir,
              "seeded": [], "created_key": False, "created_table": False}
    engine = doc.get("engine")
    if engine is None:
        engine = tomlkit.table()
        doc.add("engine", engine)
        change["created_table"] = True
    if current is None:
        seeded = [d for d in effective_hooks_dirs(lower_layers)
                  if d != hooks_dir]
        array = tomlkit.array()
        array.extend(seeded + [hooks_dir])
        engine["hooks_dir"] = array
        change.update(seeded=seeded, created_key=True)
    else:
        engine["hooks_dir"].append(hooks_dir)
    change["written"] = tomlkit.dumps(doc)
    return change["written"], change


def unregister(change):
    """Undo a register() record; returns what happened, for the log."""
    path = change["path"]
    current = _read_text(path, strict=True)
    if current is None:
        return "%s is gone; nothing to take out" % path
    if current == change["written"]:
        _restore(path, change["original"])
        fsutil.remove_empty_dirs(change.get("made_dirs", []))
        return "%s restored as it was" % path
    _check_writable(path)
    text = _take_out(path, current, change)
    if change["original"] is None and not text.strip():
        fsutil.remove(path)
        fsutil.remove_empty_dirs(change.get("made_dirs", []))
        return "%s removed: it held only our entry" % path
    if text != current:
        write(path, text)
        return "%s: our entry taken out, other edits kept" % path
    return "%s no longer lists our folder; left as it is" % path


def _restore(path, original):
    if original is None:
        fsutil.remove(path)
    else:
        write(path, original)


def _take_out(path, text, change):
    doc = parse(path, text)
    engine = doc.get("engine")
    dirs = _hooks_dirs(path, doc)
    if dirs is None:
        return text
    array = engine["hooks_dir"]
    drop = [change["added"]]
    if change["created_key"]:
        drop += change["seeded"]
    for entry in drop:
        if entry in dirs:
            index = len(dirs) - 1 - dirs[::-1].index(entry)
            del array[index]
            del dirs[index]
    if change["created_key"] and not dirs:
        del engine["hooks_dir"]
    if change["created_table"] and not engine:
        del doc["engine"]
    return tomlkit.dumps(doc)


def parse(path, text):
    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ContainersConfError(path, "not valid TOML (%s)" % exc) \
            from None
    _hooks_dirs(path, doc)
    return doc


def _hooks_dirs(path, doc):
    """The file's [engine] hooks_dir as a list of str, or None if unset."""
    engine = doc.get("engine")
    if engine is None:
        return None
    if not isinstance(engine, dict):
        raise ContainersConfError(path, "'engine' must be a table")
    if "hooks_dir" not in engine:
        return None
    dirs = engine["hooks_dir"]
    if not isinstance(dirs, list):
        raise ContainersConfError(
            path, "[engine] hooks_dir must be a list of folders, like "
            "hooks_dir = [\"/usr/share/containers/oci/hooks.d\"]")
    if not all(isinstance(d, str) for d in dirs):
        raise ContainersConfError(
            path, "[engine] hooks_dir must hold only strings")
    return [str(d) for d in dirs]


def _read_text(path, strict):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if not strict:
            return None
        raise ContainersConfError(path, "cannot read it (%s)"
                                  % exc.strerror) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if not strict:
            return None
        raise ContainersConfError(path, "not UTF-8 text") from None


def _check_writable(path):
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    if not info.st_mode & stat.S_IWUSR or not os.access(path, os.W_OK):
        raise ContainersConfError(
            path, "it is read-only; make it writable (chmod u+w)")


def write(path, text):
    """Write *text* keeping the file's mode (0644 for a new file)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o644
    fsutil.atomic_write(path, text.encode("utf-8"), mode)
