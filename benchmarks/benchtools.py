"""Helpers shared by the benchmarks (not a benchmark itself: `make bench` runs bench_*.py)."""

from __future__ import annotations

import logging
import os
import re
import time

import numpy as np


class EpochClock(logging.Handler):
    """Records (wall, cpu) at every per-epoch log record of a training loop (all records if no pattern)."""

    def __init__(self, pattern: str | None = None):
        super().__init__()
        self.pattern = re.compile(pattern) if pattern else None
        self.marks = []

    def start(self):
        self.marks = [(time.perf_counter(), time.process_time())]

    def emit(self, record):
        if self.pattern is None or self.pattern.search(record.getMessage()):
            self.marks.append((time.perf_counter(), time.process_time()))

    def median_epoch(self):
        d = np.diff(np.array(self.marks), axis=0)
        return float(np.median(d[:, 0])), float(np.median(d[:, 1])), len(d)


def load() -> str:
    return "load average %.2f %.2f %.2f on %d cores" % (*os.getloadavg(), os.cpu_count())


def in_fresh_process(target, *args):
    """What ``target(*args, queue)`` puts on its queue, run in a freshly spawned process (clean memory figures)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result
