"""Install, check and remove the terok-sandbox supervisor OCI hook.

The names below load on first use, so that ``terok_install.panic`` (an
emergency path that must work with the standard library alone) can import
this package without pulling in jinja2, tomlkit or PyYAML.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "install_supervisor_hooks": "terok_install.installer",
    "uninstall_supervisor_hooks": "terok_install.installer",
    "state_root": "terok_install.paths",
    "kill_all_supervisors": "terok_install.panic",
    "InstallError": "terok_install.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError("module 'terok_install' has no attribute %r"
                             % name)
    import importlib
    return getattr(importlib.import_module(_EXPORTS[name]), name)
