"""Parse worker processes: request bodies decoded and validated outside the server's GIL.

Parsing and normalising cost about as much CPU as everything else on the ingest path
together, and Python runs them under the process's GIL. ``seamline serve`` therefore hands
bodies to a small pool of worker processes (:class:`ParsePool`, the ``parse_processes``
setting) that run :func:`seamline.events.bodies.parse_body`, and keeps its own GIL for
HTTP, identity and the DuckDB writer. Without a pool the same function runs in the caller.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from seamline.errors import Overloaded
from seamline.events.bodies import ParsedBody, ParseJob, parse_body

log = logging.getLogger("seamline.parsing")
T = TypeVar("T")


def _start_worker(server_pid: int, nice: int = 0) -> None:
    """Worker start: import the parsing path now, lower the priority, and exit when the
    server is gone.

    ``nice`` is added to the worker's niceness. The server's writer thread commits every
    group in turn, so any time it waits for a core is time every request waits; when the
    cores are busy, the workers should yield to it. (They can afford to: a body waits for
    the writer far longer than for its parse.) On the ingest bench, niceness 10 gave
    36,933-37,070 events/s against 34,975-36,203 without.

    A server killed with SIGKILL cannot stop its workers, and they would wait for work
    forever; each checks twice a second that its parent is still the server. Ctrl-C and
    SIGTERM sent to the whole process group are the server's to handle: it finishes the
    requests in flight, which needs its workers, then stops them.
    """
    import seamline.events.fast  # noqa: F401

    if nice > 0:
        os.nice(min(nice, 19))

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == server_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="seamline-parent-watch", daemon=True).start()


class ParsePool:
    """``processes`` worker processes that run :func:`parse_body`, started on first use,
    ``nice`` steps below the server's priority.

    A worker that dies (killed, out of memory) breaks the executor: the requests it held
    are answered 503 (retryable, nothing was stored) and a new pool is started for the
    next ones.
    """

    def __init__(self, processes: int, nice: int = 0):
        self.processes = processes
        self.nice = nice  # added to each worker's niceness (see _start_worker)
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False
        # bodies handed to the workers and not parsed yet, and the mean events of a body:
        # the events on their way to the writer's queue (see :meth:`arriving_events`)
        self._pending = 0
        self._events_per_body = 0.0

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise Overloaded("The server is shutting down; retry shortly.",
                                 code="shutting_down")  # fmt: skip
            if self._executor is None:
                # spawn: the server process runs threads (DuckDB, the writer), so no fork
                self._executor = ProcessPoolExecutor(
                    self.processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker, initargs=(os.getpid(), self.nice),
                )  # fmt: skip
            return self._executor

    def arriving_events(self) -> float:
        """About how many events the bodies being parsed hold (they will queue for the
        writer next): the admission control's wait counts them, so a parse backlog cannot
        grow unseen under overload."""
        return self._pending * self._events_per_body

    def _parsed(self, body: ParsedBody | None) -> None:
        with self._lock:
            self._pending -= 1
            if body is not None:  # a moving mean; the first body sets it
                mean = self._events_per_body
                self._events_per_body = body.events if not mean else 0.9 * mean + 0.1 * body.events

    def run(self, job: ParseJob, step: Callable[[ParsedBody], Future[T]]) -> Future[T]:
        """Parse ``job`` in a worker, then ``step(parsed)`` (here): a future of its result.

        A dead worker answers 503 (retry); an error raised by the parse (a bad request)
        or by ``step`` is the outcome.
        """
        executor = self._pool()
        with self._lock:
            self._pending += 1  # before the submit: the parse may end before it returns
        try:
            try:
                future = executor.submit(parse_body, job)
            except BrokenProcessPool:  # a worker died since the last request: start anew
                self._replace(executor)
                executor = self._pool()
                future = executor.submit(parse_body, job)
        except BaseException:
            self._parsed(None)
            raise
        outcome: Future[T] = Future()

        def parsed(done: Future[ParsedBody]) -> None:
            self._parsed(None if done.cancelled() or done.exception() else done.result())
            try:
                inner = step(done.result())
            except BrokenProcessPool:
                self._replace(executor)
                outcome.set_exception(Overloaded(
                    "A parse worker stopped while reading this request; retry it (nothing "
                    "was stored).", code="parse_worker_lost"))  # fmt: skip
                return
            except BaseException as exc:  # noqa: BLE001 - the request's own error
                outcome.set_exception(exc)
                return
            inner.add_done_callback(lambda result: _copy(result, outcome))

        future.add_done_callback(parsed)
        return outcome

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """Forget a broken executor (once, whoever notices first); the next request
        starts new workers."""
        with self._lock:
            if self._executor is not broken:
                return
            log.warning("a parse worker died; starting new parse workers")
            self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the workers after the bodies they hold (call before the writer stops)."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


def _copy(source: Future[Any], target: Future[Any]) -> None:
    exc = source.exception()
    if exc is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())
