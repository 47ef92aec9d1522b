"""Add bytecode for the building interpreter to a shiv zipapp.

shiv packs sources only, so the first run after an install or upgrade
compiled every module it imports: about twice a later run's time. The
entries added here unpack with the sources into ``__pycache__``; they are
unchecked-hash .pyc files (PEP 552), dated ``SOURCE_DATE_EPOCH`` like the
rest, and another Python version ignores them and compiles as before.

Usage: add_bytecode.py SRC_DIR ZIPAPP
"""

import os
import sys
import zipfile

from reproducible_zip import entry

PREFIX = "site-packages/"


def pyc_name(name):
    folder, _, base = name.rpartition("/")
    return "%s/__pycache__/%s.%s.pyc" % (
        folder, base[:-len(".py")], sys.implementation.cache_tag)


def add(src, zipapp, epoch):
    sys.path.insert(0, src)
    from terok_install.artefacts import compiled
    with zipfile.ZipFile(zipapp) as archive:
        sources = {n: archive.read(n) for n in archive.namelist()
                   if n.startswith(PREFIX) and n.endswith(".py")}
    with zipfile.ZipFile(zipapp, "a") as archive:
        for name in sorted(sources):
            code = compiled(sources[name], name[len(PREFIX):],
                            check_source=False)
            archive.writestr(entry(pyc_name(name), epoch,
                                   zipfile.ZIP_DEFLATED), code)


if __name__ == "__main__":
    add(sys.argv[1], sys.argv[2], int(os.environ["SOURCE_DATE_EPOCH"]))
