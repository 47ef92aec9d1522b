"""Time ``podman run --rm`` with and without the supervisor annotation,
and the bare interpreter, in turns. Runs as the Podman user; prints JSON.

Usage: podman_timer.py REPS WARMUPS IMAGE SIDECAR ANNOTATION FLAG...
"""

import json
import subprocess
import sys
import time

BARE = [sys.executable, "-I", "-S", "-c", "pass"]


def once(argv):
    start = time.perf_counter()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit("%s exited %d: %s" % (" ".join(argv), done.returncode,
                                       done.stderr.decode()[-300:]))
    return seconds


def main(args):
    reps, warmups, image, sidecar, annotation = args[:5]
    plain = ["podman", "run", "--rm", *args[5:], image, "true"]
    label = "%s=%s" % (annotation, sidecar)
    supervised = plain[:3] + ["--annotation", label] + plain[3:]
    runs = {"bare": BARE, "plain": plain, "supervised": supervised}
    for _ in range(int(warmups)):
        for argv in runs.values():
            once(argv)
    times = {name: [] for name in runs}
    order = list(runs)
    for _ in range(int(reps)):
        for name in order:
            times[name].append(once(runs[name]))
        order = order[1:] + order[:1]
    print(json.dumps(times))


if __name__ == "__main__":
    main(sys.argv[1:])
