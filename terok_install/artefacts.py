"""What install lays down: every file, its bytes and its mode.

Rendering is pure, so ``install`` writes exactly what ``status`` compares
against, and a second install finds nothing to change.
"""

import json
import os
from importlib import resources

from terok_install.hooks import _supervisor_state as st

STAGES = ("createRuntime", "poststop")
HELPER_NAME = "_supervisor_state.py"
DESCRIPTOR_PATTERN = "terok-sandbox-supervisor-%s.json"
# Podman passes the hook no environment of its own unless a descriptor says.
HOOK_ENV = ["PATH=" + st.TRUSTED_PATH]
# Podman copies a descriptor into the container's spec at create time and
# the runtime runs it later, so an uninstall in between must not turn the
# hook into "python: can't open file", which fails the start. The
# descriptor runs this instead: the hook if it is there, else exit 0.
# Importing (rather than running) the hook lets it load from bytecode.
BOOTSTRAP = (
    "import sys\n"
    "sys.path.insert(0, sys.argv[1].rpartition('/')[0])\n"
    "try:\n"
    "    import supervisor_hook\n"
    "except Exception:\n"
    "    sys.exit(0)\n"
    "sys.argv = sys.argv[1:]\n"
    "supervisor_hook.run()\n")
# Bytes of a .pyc that say which source and interpreter it is for: the rest
# (marshal output) need not be identical between two compilations.
PYC_HEADER_BYTES = 16


class Layout:
    """The paths of one install."""

    def __init__(self, state_root, hooks_dir=None):
        self.state_root = state_root
        self.scripts_dir = os.path.join(state_root, "hooks")
        self.hooks_dir = hooks_dir or self.scripts_dir
        self.hook = os.path.join(self.scripts_dir, st.HOOK_NAME)
        self.helper = os.path.join(self.scripts_dir, HELPER_NAME)
        self.pycache = os.path.join(self.scripts_dir, "__pycache__")
        self.wrapper = os.path.join(state_root, st.WRAPPER_NAME)

    def descriptor(self, stage):
        return os.path.join(self.hooks_dir, DESCRIPTOR_PATTERN % stage)

    def descriptors(self):
        return [self.descriptor(stage) for stage in STAGES]


def resource_bytes(package, name):
    return resources.files(package).joinpath(name).read_bytes()


def render_wrapper(sandbox_argv):
    import jinja2
    env = jinja2.Environment(keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined,
                             autoescape=False)
    env.filters["pyrepr"] = repr
    source = resource_bytes("terok_install.templates",
                            "supervisor_wrapper.py.j2").decode("utf-8")
    return env.from_string(source).render(
        sandbox_argv=sandbox_argv).encode("utf-8")


def render_descriptor(layout, stage, interpreter):
    descriptor = {
        "version": "1.0.0",
        "hook": {
            "path": interpreter,
            "args": [interpreter, "-I", "-S", "-c", BOOTSTRAP, layout.hook,
                     stage],
            "env": HOOK_ENV,
        },
        "when": {"annotations": {st.SIDECAR_ANNOTATION: ".+"}},
        "stages": [stage],
    }
    return (json.dumps(descriptor, indent=2) + "\n").encode("utf-8")


def compiled(source, path, check_source=True):
    """A hash-based .pyc (PEP 552) of *source* for this interpreter."""
    import importlib.util
    import marshal
    flags = 0b11 if check_source else 0b01
    code = compile(source, path, "exec", dont_inherit=True)
    return (importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little")
            + importlib.util.source_hash(source) + marshal.dumps(code))


def bytecode(path, source):
    """(pyc path, bytes): the hook runs as the container's user, who
    cannot write a cache into a system-wide install, and compiling on
    every container start would double the hook's cost."""
    import importlib.util
    return importlib.util.cache_from_source(path), compiled(source, path)


def scripts(layout, sandbox_argv):
    """[(path, bytes, mode, bytes to compare)] needed before any
    descriptor; None compares the whole file."""
    files = []
    for path, name, mode in ((layout.helper, HELPER_NAME, 0o644),
                             (layout.hook, st.HOOK_NAME, 0o755)):
        source = resource_bytes("terok_install.hooks", name)
        pyc_path, pyc = bytecode(path, source)
        files += [(path, source, mode, None),
                  (pyc_path, pyc, 0o644, PYC_HEADER_BYTES)]
    files.append((layout.wrapper, render_wrapper(sandbox_argv), 0o755, None))
    return files


def descriptors(layout, interpreter):
    return [(layout.descriptor(stage),
             render_descriptor(layout, stage, interpreter), 0o644, None)
            for stage in STAGES]


def pyc_files(layout):
    """Bytecode of ours in the cache folder, for any interpreter version."""
    import glob
    found = []
    for name in (HELPER_NAME, st.HOOK_NAME):
        stem = glob.escape(name[:-len(".py")])
        found += glob.glob(os.path.join(glob.escape(layout.pycache),
                                        stem + ".*.pyc"))
    return sorted(found)
