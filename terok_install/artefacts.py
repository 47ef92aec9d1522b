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
# descriptor runs this instead: the script if it is there, else exit 0.
BOOTSTRAP = (
    "import sys\n"
    "try:\n"
    "    f = open(sys.argv[1], 'rb')\n"
    "except OSError:\n"
    "    sys.exit(0)\n"
    "with f:\n"
    "    code = compile(f.read(), sys.argv[1], 'exec')\n"
    "sys.argv = sys.argv[1:]\n"
    "exec(code, {'__name__': '__main__', '__file__': sys.argv[0]})\n")


class Layout:
    """The paths of one install."""

    def __init__(self, state_root, hooks_dir=None):
        self.state_root = state_root
        self.scripts_dir = os.path.join(state_root, "hooks")
        self.hooks_dir = hooks_dir or self.scripts_dir
        self.hook = os.path.join(self.scripts_dir, st.HOOK_NAME)
        self.helper = os.path.join(self.scripts_dir, HELPER_NAME)
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


def scripts(layout, sandbox_argv):
    """[(path, bytes, mode)] that must exist before any descriptor."""
    return [
        (layout.helper, resource_bytes("terok_install.hooks", HELPER_NAME),
         0o644),
        (layout.hook, resource_bytes("terok_install.hooks", st.HOOK_NAME),
         0o755),
        (layout.wrapper, render_wrapper(sandbox_argv), 0o755),
    ]


def descriptors(layout, interpreter):
    return [(layout.descriptor(stage),
             render_descriptor(layout, stage, interpreter), 0o644)
            for stage in STAGES]
