"""``python -m terok_sandbox supervise-child ...``: sleep until killed."""

import os
import signal
import time

if os.environ.get("STANDIN_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    time.sleep(3600)
