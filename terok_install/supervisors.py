"""Count the supervisors that still run, for status and uninstall."""

import glob
import os
import pwd

from terok_install.hooks import _supervisor_state as st


def user_state_roots():
    """Each user's default state root, for a system-wide view."""
    roots = []
    for user in pwd.getpwall():
        if user.pw_dir.startswith("/") and user.pw_dir != "/":
            roots.append(st.default_state_root(False, {}, user.pw_dir))
    return roots


def live_supervisors(roots, wrapper_paths, proc=st.PROC):
    """Container ids whose pid file names a live wrapper of ours."""
    wrappers = {os.fsencode(p) for p in wrapper_paths}
    live = []
    for root in sorted(set(roots)):
        pattern = os.path.join(glob.escape(root), "pids", "supervisor-*.pid")
        for path in sorted(glob.glob(pattern)):
            cid = os.path.basename(path)[len("supervisor-"):-len(".pid")]
            try:
                pgid = st.read_pid_file(path)
            except (OSError, ValueError):
                continue
            if st.running(pgid, proc) and st.is_our_wrapper(
                    pgid, cid, wrappers, proc):
                live.append(cid)
    return live
