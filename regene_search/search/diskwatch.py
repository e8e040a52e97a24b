"""Stops a search while the local results disk still has room to save Tune's state, so `--resume` continues it."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from ray import tune

from ..storage import MIN_FREE_BYTES, Location

# Set in the driver when the watch stopped the search. Module-level, not on the callback: on
# resume Tune uses the callback objects it pickled, not the ones the stage made.
low_disk = threading.Event()
CHECK_EVERY_S = 1.0


class DiskWatch(tune.Callback):
    """Below MIN_FREE_BYTES free on the results disk, ends the search the way Ctrl-C does (Tune's
    SIGUSR1 handler): running trials are saved as they are and the experiment state is written."""

    def __init__(self, root: Location) -> None:
        self.root = root
        self.next_check = 0.0

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now < self.next_check or low_disk.is_set():
            return
        self.next_check = now + CHECK_EVERY_S
        free = self.root.free_bytes()
        if free is not None and free < MIN_FREE_BYTES:
            low_disk.set()
            os.kill(os.getpid(), signal.SIGUSR1)
