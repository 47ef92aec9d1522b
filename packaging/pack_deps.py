"""Pack the zipapp's pure-Python dependencies into one zip in site-packages.

shiv unpacks every file of its site-packages on a zipapp's first run, and
creating files dominates that run. jinja2, MarkupSafe, tomlkit and PyYAML
need no unpacking (no compiled objects, no data files read from disk), so
they travel as ``terok-install-deps.zip``, which a ``.pth`` file puts on
``sys.path`` (shiv adds site-packages with ``site.addsitedir``) and
zipimport reads in place. terok_install itself stays unpacked.

Entries are stored, not deflated (the zipapp deflates the whole file), so
imports inflate nothing; they are sorted and dated ``SOURCE_DATE_EPOCH``
for byte-identical builds. Each module gets bytecode for the building
interpreter beside its source, where zipimport looks for it; another
Python version compiles the source in memory instead.

Usage: pack_deps.py SRC_DIR SITE_DIR
"""

import os
import shutil
import sys
import zipfile

from reproducible_zip import write

ZIP_NAME = "terok-install-deps.zip"
PTH_NAME = "terok-install-deps.pth"
KEEP = ("terok_install", "bin")  # unpacked as they are


def packed(site):
    """Top-level names in *site* that go into the zip."""
    return sorted(n for n in os.listdir(site)
                  if not n.startswith(KEEP) and not n.endswith(".pth"))


def files_under(site, names):
    """{archive name: bytes} of every file below *names*."""
    found = {}
    for name in names:
        top = os.path.join(site, name)
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            for base in files:
                path = os.path.join(folder, base)
                with open(path, "rb") as f:
                    found[os.path.relpath(path, site)] = f.read()
    return found


def with_bytecode(files, compiled):
    """*files* and a .pyc beside each module, as zipimport wants it."""
    out = dict(files)
    for name, data in files.items():
        if name.endswith(".py"):
            out[name + "c"] = compiled(data, name, check_source=False)
    return out


def pack(src, site, epoch):
    sys.path.insert(0, src)
    from terok_install.artefacts import compiled
    names = packed(site)
    files = with_bytecode(files_under(site, names), compiled)
    with zipfile.ZipFile(os.path.join(site, ZIP_NAME), "w") as archive:
        write(archive, files, epoch)
    for name in names:
        shutil.rmtree(os.path.join(site, name))
    with open(os.path.join(site, PTH_NAME), "w") as f:
        f.write(ZIP_NAME + "\n")


if __name__ == "__main__":
    pack(sys.argv[1], sys.argv[2], int(os.environ["SOURCE_DATE_EPOCH"]))
