"""The install record: one entry per install, with what it changed.

JSON, so that terok-panic can read the state roots with the standard
library alone. Uninstall uses an entry to undo exactly what install did.
"""

import json
import os

from terok_install import fsutil
from terok_install.errors import InstallError

VERSION = 1


class Record:
    def __init__(self, path, installs):
        self.path = path
        self.installs = installs

    @classmethod
    def load(cls, path):
        data = fsutil.read_bytes(path)
        if data is None:
            return cls(path, [])
        try:
            installs = json.loads(data.decode("utf-8"))["installs"]
            if not isinstance(installs, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise InstallError(
                "%s is not an install record this version understands; "
                "move it aside and run the command again" % path) from None
        return cls(path, installs)

    def find(self, state_root, hooks_dir):
        for entry in self.installs:
            if (entry.get("state_root"), entry.get("hooks_dir")) == (
                    state_root, hooks_dir):
                return entry
        return None

    def put(self, entry):
        old = self.find(entry["state_root"], entry["hooks_dir"])
        if old is not None:
            self.installs.remove(old)
        self.installs.append(entry)

    def drop(self, entry):
        if entry in self.installs:
            self.installs.remove(entry)

    def save(self):
        if not self.installs:
            fsutil.remove(self.path)
            return
        data = {"version": VERSION, "installs": self.installs}
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        fsutil.make_dirs(os.path.dirname(self.path))
        fsutil.atomic_write(self.path, text.encode("utf-8"), 0o644)
