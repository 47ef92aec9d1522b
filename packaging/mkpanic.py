"""Build ``terok-panic``: the panic path as a zip behind a two-line launcher.

The file is a shell script and a zip at once. ``/bin/sh`` reads only its
first lines, which exec ``python3 -I -S -c`` with an import of the panic
module from the file itself: zipimport needs no unpacking, and unlike
``python3 file.zip`` it skips runpy, whose imports cost more than half of
the interpreter's own start. Everything after those lines is a here-document
to the shell (so ``sh -n`` and lintian accept the file), which ends in the
zip's comment; zipimport finds the archive however much precedes it.
``python3 -I -S terok-panic`` still works and runs ``__main__.py``.

Entries are stored, not deflated, so an emergency inflates nothing; they
are sorted and dated ``SOURCE_DATE_EPOCH`` so that two builds of one
commit are byte-identical. Each module also gets bytecode for the
building interpreter, which zipimport uses instead of compiling on every
emergency; another Python version falls back to the source.

Usage: mkpanic.py SRC_DIR OUTPUT
"""

import io
import os
import sys
import zipfile

from reproducible_zip import write

END = b"END_OF_TEROK_PANIC_ZIP"
ENTRY = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from terok_install.panic import main; sys.exit(main(sys.argv[2:]))")
LAUNCHER = b"""#!/bin/sh
exec /usr/bin/python3 -I -S -c '%s' "$0" "$@"
: <<'%s'
""" % (ENTRY.encode(), END)
MODULES = (
    "terok_install/__init__.py",
    "terok_install/hooks/__init__.py",
    "terok_install/hooks/_supervisor_state.py",
    "terok_install/panic.py",
)
MAIN = b"import sys\nfrom terok_install.panic import main\nsys.exit(main())\n"
def archive(files, epoch):
    """The zip of *files*, its comment closing the shell's here-document."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        write(out, files, epoch)
        out.comment = b"\n" + END + b"\n"
    data = buffer.getvalue()
    if data.count(b"\n" + END + b"\n") != 1:
        sys.exit("mkpanic.py: the zip holds the here-document's end marker")
    return data


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
        out.write(LAUNCHER + archive(files, epoch))
    os.chmod(output, 0o755)


if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2], int(os.environ["SOURCE_DATE_EPOCH"]))
