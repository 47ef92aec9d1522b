"""Where things live: the state root, containers.conf, the install record.

``state_root()`` resolves, first match wins: ``TEROK_SANDBOX_STATE_DIR``;
``TEROK_ROOT`` plus ``/sandbox``; ``paths.root`` of terok's layered
``config.yml`` plus ``/sandbox``; the default for root or for a user.
"""

import logging
import os
import pwd

from terok_install.errors import ConfigError
from terok_install.hooks import _supervisor_state as st

log = logging.getLogger(__name__)

SYSTEM_CONFIG = "/etc/terok/config.yml"


def is_root():
    """Real root, not uid 0 inside a rootless user namespace."""
    return st.real_root()


def home(env=None):
    env = os.environ if env is None else env
    if env.get("HOME", "").startswith("/"):
        return env["HOME"]
    return pwd.getpwuid(os.geteuid()).pw_dir


def state_root(env=None):
    """The terok-sandbox state root for this user and environment."""
    env = os.environ if env is None else env
    found = st.env_state_root(env)
    if found:
        return os.path.abspath(found)
    root = configured_root(env)
    if root:
        return os.path.join(root, "sandbox")
    return st.default_state_root(is_root(), env, home(env))


def config_files(env):
    """terok's config.yml layers, lowest first."""
    if env.get("TEROK_CONFIG_FILE"):
        return [env["TEROK_CONFIG_FILE"]]
    files = [SYSTEM_CONFIG]
    if not is_root():
        config = st.xdg_dir(env, "XDG_CONFIG_HOME", home(env), ".config")
        files.append(os.path.join(config, "terok", "config.yml"))
    return files


def configured_root(env):
    """``paths.root`` from the highest config layer that sets it, or None."""
    root = None
    for path in config_files(env):
        value = _paths_root(path)
        if value is not None:
            root = value
    return root


def _paths_root(path):
    import yaml
    try:
        with open(path, "rb") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(path, "cannot read it (%s); fix its permissions"
                          % exc.strerror) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, "not valid YAML: %s" % _one_line(exc)) \
            from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(path, "expected a mapping at the top level")
    paths = data.get("paths")
    if paths is None:
        return None
    if not isinstance(paths, dict):
        raise ConfigError(path, "'paths' must be a mapping")
    root = paths.get("root")
    if root is None:
        return None
    if not isinstance(root, str) or not os.path.isabs(
            os.path.expanduser(root)):
        raise ConfigError(path, "'paths.root' must be an absolute path, "
                          "not %r" % (root,))
    return os.path.expanduser(root)


def _one_line(exc):
    return " ".join(str(exc).split())


def containers_conf(env=None):
    """The containers.conf file this user's registration goes into."""
    env = os.environ if env is None else env
    if env.get("CONTAINERS_CONF"):
        return os.path.abspath(env["CONTAINERS_CONF"])
    if is_root():
        return "/etc/containers/containers.conf"
    config = st.xdg_dir(env, "XDG_CONFIG_HOME", home(env), ".config")
    return os.path.join(config, "containers", "containers.conf")


def record_path(env=None):
    env = os.environ if env is None else env
    return st.record_path(is_root(), env, home(env))
