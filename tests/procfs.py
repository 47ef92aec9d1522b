"""What the host's /proc says about processes, for the tests' own checks.

Written apart from the hook helper on purpose: a test that judged the
hook's process handling with the hook's own readers could not catch their
bugs. Standard library only, so bench/ can import it through
podman_support without pytest.
"""

import os


def _state_and_fields(pid):
    try:
        with open("/proc/%s/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may hold spaces and ')'; fields follow the last ')'.
    return data[data.rfind(b")") + 2:].split()


def alive(pid):
    """True while *pid* runs; a zombie has exited."""
    fields = _state_and_fields(pid)
    return bool(fields) and fields[0] not in (b"Z", b"X")


def zombie(pid):
    fields = _state_and_fields(pid)
    return bool(fields) and fields[0] == b"Z"


def _pids():
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def group_pids(pgid):
    """Running members of process group *pgid*."""
    found = []
    for pid in _pids():
        fields = _state_and_fields(pid)
        if fields and int(fields[2]) == pgid and fields[0] not in (b"Z",
                                                                  b"X"):
            found.append(pid)
    return found


def pids_mentioning(*texts):
    """Live processes whose argv holds every one of *texts*, ours excluded."""
    needles = [os.fsencode(str(t)) for t in texts]
    found = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read()
        except OSError:
            continue
        if all(n in argv for n in needles) and alive(pid):
            found.append(pid)
    return sorted(found)
