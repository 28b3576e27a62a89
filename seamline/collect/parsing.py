"""Parse worker processes: request bodies decoded and validated outside the server's GIL.

Parsing and normalising cost about as much CPU as everything else on the ingest path
together, and Python runs them under the process's GIL. ``seamline serve`` therefore hands
bodies to a small pool of worker processes (:class:`ParsePool`, the ``parse_processes``
setting) that run :func:`seamline.events.bodies.parse_body`, and keeps its own GIL for
HTTP, identity and the DuckDB writer. Without a pool the same function runs in the caller.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import multiprocessing
import multiprocessing.context
import os
import pickle
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from seamline.errors import Overloaded
from seamline.events.bodies import ParsedBody, ParseJob, parse_body
from seamline.events.normalise import EventRows

log = logging.getLogger("seamline.parsing")
PIPE_BUFFER = 2 << 20  # bytes; a body is at most max_request_bytes (500 KB by default)
T = TypeVar("T")


def _start_worker(server_pid: int, nice: int = 0) -> None:
    """Worker start: import the parsing path now, lower the priority, and exit when the
    server is gone.

    ``nice`` is added to the worker's niceness. The server's writer thread commits every
    group in turn, so any time it waits for a core is time every request waits; when the
    cores are busy, the workers should yield to it. (They can afford to: a body waits for
    the writer far longer than for its parse.) On the ingest bench, niceness 10 gave
    36,933-37,070 events/s against 34,975-36,203 without.

    A server killed with SIGKILL cannot stop its workers. A worker waiting for work reads
    the end of its pipe and returns (:func:`_work`); as a second guard, each also checks
    twice a second that its parent is still the server. Ctrl-C and
    SIGTERM sent to the whole process group are the server's to handle: it finishes the
    requests in flight, which needs its workers, then stops them.
    """
    if nice > 0:  # first: the imports below are the worker's heaviest start-up work
        os.nice(min(nice, 19))

    import seamline.events.fast  # noqa: F401

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == server_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="seamline-parent-watch", daemon=True).start()


class _Worker:
    """One worker process and the server's end of its pipe."""

    def __init__(self, context: multiprocessing.context.SpawnContext, nice: int):
        self.conn, child = context.Pipe(duplex=True)
        # Room for a whole body in the pipe: the event loop sends a body to an idle worker
        # itself, and must not wait for it to read (the kernel may cap the size).
        with contextlib.suppress(OSError):
            end = socket.socket(fileno=os.dup(self.conn.fileno()))
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIPE_BUFFER)
            end.close()
        self.process = context.Process(target=_work, args=(child, os.getpid(), nice),
                                       name="seamline-parse", daemon=True)  # fmt: skip
        self.process.start()
        child.close()
        self.task: _Task | None = None  # the body it is parsing


class _Task:
    __slots__ = ("outcome", "payload", "step")

    def __init__(self, payload: bytes, step: Callable[[ParsedBody], Future[Any]]):
        self.payload = payload
        self.step = step
        self.outcome: Future[Any] = Future()


def _work(conn: Connection, server_pid: int, nice: int) -> None:
    """A worker's loop: a pickled :class:`ParseJob` in, ``(True, ParsedBody)`` or
    ``(False, exception)`` out (:func:`_encode_answer`), until the server's end of the pipe
    closes."""
    _start_worker(server_pid, nice)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):  # the server died
            return
        if not data:  # the pool is closing
            return
        job = pickle.loads(data)
        try:
            answer: tuple[bool, Any] = (True, parse_body(job))
        except Exception as exc:  # noqa: BLE001 - the request's own error, for the server
            answer = (False, exc)
        try:
            conn.send_bytes(_encode_answer(answer))
        except OSError:
            return


_MARSHALLED, _PICKLED = b"M", b"P"


def _encode_answer(answer: tuple[bool, Any]) -> bytes:
    """A worker's answer for the pipe.

    A body whose events all passed (the common case) goes as ``marshal`` data: its
    columns hold only texts, integers, booleans and None, and ``marshal`` writes and reads
    them in about half and five sixths of pickle's time (0.43 against 0.84 µs an event to
    write, 0.53 against 0.62 to read on the server). Anything else (failed events,
    errors) is pickled.
    """
    ok, value = answer
    if ok and not value.failed:
        with contextlib.suppress(ValueError):  # a value marshal does not take: pickle it
            return _MARSHALLED + marshal.dumps(
                (value.write_key, value.events, value.rows.columns, value.key_digests,
                 value.keys_source))  # fmt: skip
    try:
        return _PICKLED + pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - an error that does not pickle
        return _PICKLED + pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")))


def _decode_answer(payload: bytes) -> tuple[bool, Any]:
    """What :func:`_encode_answer` wrote: ``(True, ParsedBody)`` or ``(False, error)``."""
    data = memoryview(payload)[1:]
    if payload[:1] == _MARSHALLED:
        write_key, events, columns, digests, source = marshal.loads(data)
        return True, ParsedBody(write_key, events, EventRows(columns), [], digests, source)
    answer: tuple[bool, Any] = pickle.loads(data)
    return answer


class ParsePool:
    """``processes`` worker processes that run :func:`parse_body`, started on first use,
    ``nice`` steps below the server's priority.

    Each worker has a pipe and a thread of the server's that reads its answers; a body
    goes straight to an idle worker, or waits in one queue for the first worker done.
    (This replaced a ``ProcessPoolExecutor``, whose manager and feeder threads took
    about a fifth of the server's GIL time on the ingest bench; the writer waits for
    that GIL.) A worker that dies (killed, out of memory) costs the body it held, answered
    503 (retryable, nothing was stored); a new worker takes its place.
    """

    def __init__(self, processes: int, nice: int = 0):
        self.processes = processes
        self.nice = nice  # added to each worker's niceness (see _start_worker)
        self._context = multiprocessing.get_context("spawn")  # the server runs threads
        self._lock = threading.Condition()
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._queue: deque[_Task] = deque()
        self._closed = False
        # bodies handed to the workers and not parsed yet, and the mean events of a body:
        # the events on their way to the writer's queue (see :meth:`arriving_events`)
        self._pending = 0
        self._events_per_body = 0.0

    def _start(self) -> None:
        """Start a worker and the thread that reads it (holding the lock)."""
        worker = _Worker(self._context, self.nice)
        self._workers.append(worker)
        self._idle.append(worker)
        threading.Thread(target=self._read, args=(worker,), name="seamline-parse-reader",
                         daemon=True).start()  # fmt: skip

    def arriving_events(self) -> float:
        """About how many events the bodies being parsed hold (they will queue for the
        writer next): the admission control's wait counts them, so a parse backlog cannot
        grow unseen under overload."""
        return self._pending * self._events_per_body

    def run(self, job: ParseJob, step: Callable[[ParsedBody], Future[T]]) -> Future[T]:
        """Parse ``job`` in a worker, then ``step(parsed)`` (in the server): a future of its
        result.

        A dead worker answers 503 (retry); an error raised by the parse (a bad request)
        or by ``step`` is the outcome.
        """
        task = _Task(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL), step)
        with self._lock:
            if self._closed:
                raise Overloaded("The server is shutting down; retry shortly.",
                                 code="shutting_down")  # fmt: skip
            if not self._workers:
                for _ in range(self.processes):
                    self._start()
            self._pending += 1
            if not self._idle:
                self._queue.append(task)
                return task.outcome
            worker = self._idle.pop()
            worker.task = task
        self._send(worker, task)  # an idle worker is reading: this does not block long
        return task.outcome

    @staticmethod
    def _send(worker: _Worker, task: _Task) -> None:
        # a worker that died meanwhile fails the send: its reader answers the task (503)
        with contextlib.suppress(OSError):
            worker.conn.send_bytes(task.payload)

    def _read(self, worker: _Worker) -> None:
        """The reader of one worker: answer its bodies in turn and give it the next one."""
        while True:
            try:
                payload = worker.conn.recv_bytes()
            except (EOFError, OSError):
                self._lost(worker)
                return
            with self._lock:
                task, worker.task = worker.task, None
                following = self._queue.popleft() if self._queue else None
                if following is not None:
                    worker.task = following
                else:
                    self._idle.append(worker)
                    self._lock.notify_all()
            if following is not None:  # the worker starts on it while this one is answered
                self._send(worker, following)
            if task is not None:
                self._answer(task, payload)

    def _answer(self, task: _Task, payload: bytes) -> None:
        try:
            ok, value = _decode_answer(payload)
        except BaseException as exc:  # noqa: BLE001 - an answer that does not decode
            self._parsed(None)
            task.outcome.set_exception(exc)
            return
        self._parsed(value if ok else None)
        if not ok:  # the request's own error (a bad request)
            task.outcome.set_exception(value)
            return
        try:
            inner = task.step(value)
        except BaseException as exc:  # noqa: BLE001 - the request's own error
            task.outcome.set_exception(exc)
            return
        inner.add_done_callback(lambda result: _copy(result, task.outcome))

    def _parsed(self, body: ParsedBody | None) -> None:
        with self._lock:
            self._pending -= 1
            if body is not None:  # a moving mean; the first body sets it
                mean = self._events_per_body
                self._events_per_body = body.events if not mean else 0.9 * mean + 0.1 * body.events
            self._lock.notify_all()

    def _lost(self, worker: _Worker) -> None:
        """A worker's pipe closed: it died, or the pool is closing."""
        worker.process.join(1)  # reap it (its pipe closed: it has exited or is exiting)
        fresh: _Worker | None = None
        with self._lock:
            task, worker.task = worker.task, None
            if worker in self._idle:
                self._idle.remove(worker)
            self._workers.remove(worker)
            if not self._closed:
                log.warning("a parse worker died (exit code %s); starting a new one",
                            worker.process.exitcode)  # fmt: skip
                self._start()
                if self._queue:
                    fresh = self._idle.pop()
                    fresh.task = self._queue.popleft()
            self._lock.notify_all()
        worker.conn.close()
        if fresh is not None and fresh.task is not None:
            self._send(fresh, fresh.task)
        if task is not None:
            self._parsed(None)
            task.outcome.set_exception(Overloaded(
                "A parse worker stopped while reading this request; retry it (nothing "
                "was stored).", code="parse_worker_lost"))  # fmt: skip

    def close(self, timeout: float = 30) -> None:
        """Finish the bodies handed over, then stop the workers (call before the writer
        stops)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
            while self._pending and self._workers and time.monotonic() < deadline:
                self._lock.wait(0.1)
            workers = list(self._workers)
        for worker in workers:  # an empty message: the worker returns, its reader sees EOF
            with contextlib.suppress(OSError):
                worker.conn.send_bytes(b"")
        for worker in workers:
            worker.process.join(max(0.1, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()


def _copy(source: Future[Any], target: Future[Any]) -> None:
    exc = source.exception()
    if exc is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())
