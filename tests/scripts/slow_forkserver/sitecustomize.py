"""On PYTHONPATH, makes multiprocessing's fork server start late (tests/test_sweep.py): the
launching process then stops while its workers wait to be forked."""

import os
import time

with open("/proc/self/cmdline", "rb") as cmdline:
    if b"multiprocessing.forkserver" in cmdline.read():
        time.sleep(float(os.environ.get("ANNLAB_TEST_FORKSERVER_DELAY", "6")))
