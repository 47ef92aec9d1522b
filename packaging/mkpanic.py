"""Build ``terok-panic``: a zip of the panic path behind a shebang line.

Python runs a zip given as its script through zipimport, so the file runs
under ``-I -S`` without unpacking anything and with the standard library
alone. The shebang spells them ``-IS``: Linux hands everything after the
interpreter over as one argument, and python rejects ``"-I -S"``.
Entries are sorted and dated ``SOURCE_DATE_EPOCH`` so that two builds of
one commit are byte-identical. Each module also gets bytecode for the
building interpreter, which zipimport uses instead of compiling on every
emergency; another Python version falls back to the source.

Usage: mkpanic.py SRC_DIR OUTPUT
"""

import os
import sys
import time
import zipfile

SHEBANG = b"#!/usr/bin/python3 -IS\n"
MODULES = (
    "terok_install/__init__.py",
    "terok_install/hooks/__init__.py",
    "terok_install/hooks/_supervisor_state.py",
    "terok_install/panic.py",
)
MAIN = b"import sys\nfrom terok_install.panic import main\nsys.exit(main())\n"
ZIP_EPOCH = 315532800  # 1980-01-01, the earliest date a zip can hold


def entry(name, epoch):
    info = zipfile.ZipInfo(name, time.gmtime(max(epoch, ZIP_EPOCH))[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o100644 << 16
    return info


def build(src, output, epoch):
    sys.path.insert(0, src)
    from terok_install.artefacts import compiled
    files = {"__main__.py": MAIN}
    for name in MODULES:
        try:
            with open(os.path.join(src, name), "rb") as f:
                files[name] = f.read()
        except FileNotFoundError:
            sys.exit("mkpanic.py: %s is missing" % name)
        files[name + "c"] = compiled(files[name], name, check_source=False)
    with open(output, "wb") as out:
        out.write(SHEBANG)
        with zipfile.ZipFile(out, "w") as archive:
            for name in sorted(files):
                archive.writestr(entry(name, epoch), files[name])
    os.chmod(output, 0o755)


if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2], int(os.environ["SOURCE_DATE_EPOCH"]))
