"""Stop the Ray processes a test started, found by the test's own Ray temp dir (never by name)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def pids_using(temp_dir: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline:
            pids.append(int(proc.name))
    return pids


def stop_ray_processes(temp_dir: str, timeout: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids_using(temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while pids_using(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
