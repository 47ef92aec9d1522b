"""shiv preamble: delete what other builds of this zipapp unpacked.

shiv unpacks each build into ``<SHIV_ROOT>/<name>_<build id>`` beside a
``.<name>_<build id>_lock`` file and never cleans up, so every upgrade
would leave the previous copy behind. shiv runs this file after its own
unpack with ``archive``, ``env`` and ``site_packages`` as globals.

Best effort: a failure here must never stop the installer, and a copy
whose lock another process holds (it is being unpacked) is left alone.
"""

import fcntl
import os
import shutil
from pathlib import Path


def build_ids(root, name):
    """Build ids seen in ``root`` for zipapp ``name``."""
    ids = set()
    for entry in os.listdir(root):
        if entry.startswith(name + "_"):
            ids.add(entry[len(name) + 1:].rsplit(".tmp", 1)[0])
        elif entry.startswith("." + name + "_") and entry.endswith("_lock"):
            ids.add(entry[len(name) + 2:-len("_lock")])
    return ids


def prune(root, name, build_id):
    """Remove one stale build unless someone holds its lock."""
    unpacked = root / ("%s_%s" % (name, build_id))
    lock = root / (".%s_%s_lock" % (name, build_id))
    with open(lock, "a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        for folder in (unpacked, Path(str(unpacked) + ".tmp")):
            shutil.rmtree(folder, ignore_errors=True)
        lock.unlink()


def prune_all(site_packages, archive, own_id):
    root = Path(site_packages).parent.parent
    name = Path(archive).resolve().name
    for build_id in build_ids(root, name) - {own_id}:
        try:
            prune(root, name, build_id)
        except OSError:
            pass


if __name__ == "__main__":
    try:
        prune_all(site_packages, archive, env.build_id)
    except Exception:  # a stale cache is harmless; a crash here is not
        pass
