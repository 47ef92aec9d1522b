"""Count the supervisors that still run, for status and uninstall.

Looks where terok-panic looks, so the two never disagree about what runs.
"""

import os

from terok_install import panic
from terok_install.hooks import _supervisor_state as st


def live_supervisors(env=None, proc=st.PROC):
    """Container ids whose pid file names a live wrapper of ours."""
    env = os.environ if env is None else env
    roots, wrapper_roots = panic.known_roots(env, st.real_root())
    wrappers = panic.wrapper_paths(wrapper_roots)
    live = []
    for target in panic.pid_file_targets(roots):
        if target.pid_file is None:
            continue
        try:
            pgid, _ = st.read_pid_file(target.pid_file)
        except (OSError, ValueError):
            continue
        if st.running(pgid, proc) and st.is_our_wrapper(
                pgid, target.cid, wrappers, proc):
            live.append(target.cid)
    return live
