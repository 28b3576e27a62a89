"""Background precompute: the dashboard's default views, recomputed after commits.

The sorted sequence snapshot (:mod:`seamline.analytics.snapshot`) is built first, so the
jobs and any ad-hoc analysis of the same data version skip the sort. A first visit to the
overview (or the journeys, seams and retention pages with their default filters) is then
served from :class:`seamline.analytics.cache.ResultCache` instead of scanning a million
events. The thread wakes on each commit that stored events
(a writer listener) and also checks the data version every ``interval`` seconds (other
commits: forget, sources), but recomputes at most once per ``interval`` seconds, so a
busy ingest costs one round of analyses per interval, not one per commit. A round
whose data version is already cached costs nothing (the cache answers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from seamline.app import Workspace
from seamline.errors import SeamlineError

log = logging.getLogger("seamline.web")

#: (analysis, parameters); the parameters may be a function of the workspace's data (the
#: Paths page's default event is the most common one), returning None to skip the job
Job = tuple[str, Mapping[str, Any] | Callable[[], Mapping[str, Any] | None]]


class Precompute:
    """Keeps the results of ``jobs`` (analysis, parameters) current in the workspace cache."""

    def __init__(self, workspace: Workspace, jobs: Sequence[Job], interval: float,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.workspace = workspace
        self.jobs = list(jobs)
        self.interval = interval
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seamline-precompute",
                                        daemon=True)  # fmt: skip
        self.rounds = 0  # rounds that found something to compute
        self.last_version = -1

    def start(self) -> Precompute:
        if self.interval > 0 and self.jobs:
            self._thread.start()
        return self

    def poke(self, *_: object) -> None:
        """A commit happened (writer listener: called on the writer thread, must be quick)."""
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        last_round = float("-inf")
        while not self._stop.is_set():
            if self.workspace.data_version != self.last_version:
                wait = last_round + self.interval - self._clock()
                if wait > 0 and self._stop.wait(wait):  # debounce: once per interval
                    return
                last_round = self._clock()
                self._round()
            self._wake.wait(self.interval)
            self._wake.clear()

    def _round(self) -> None:
        version = self.workspace.data_version
        computed = 0
        try:  # the sorted sequence snapshot first: the jobs and later ad-hoc analyses use it
            self.workspace.prepare()
        except SeamlineError as exc:
            log.info("precompute of the sequence snapshot skipped: %s", exc.message)
            return
        except Exception:
            if self._stop.is_set():
                return
            log.exception("precompute of the sequence snapshot failed")
        for analysis, params in self.jobs:
            if self._stop.is_set():
                return
            try:
                bound = params() if callable(params) else params
                if bound is None:
                    continue
                computed += not self.workspace.cached(analysis, **bound).hit
            except SeamlineError as exc:  # e.g. the store is unavailable: next round retries
                log.info("precompute of %s skipped: %s", analysis, exc.message)
                return
            except Exception:  # the thread must outlive one failed analysis
                if self._stop.is_set():  # the store closed under a running query
                    return
                log.exception("precompute of %s failed", analysis)
        self.last_version = version
        self.rounds += computed > 0
