"""The delivery worker: sends what the outbox holds, at least once, until it expires.

A dispatcher thread reads due ``pending`` rows and hands them to a few sender threads;
each attempt's outcome is written back through the writer. The rules:

- **Idempotency.** The delivery id is the ``webhook-id`` of every attempt and replay;
  receivers deduplicate on it (at-least-once delivery, effectively once for them).
- **Retries.** Network errors, timeouts, 408, 425, 429 and 5xx are retried with exponential
  backoff and full jitter (base ``moments_retry_base_ms``, x4 per attempt, at most six
  hours), never sooner than the receiver's ``Retry-After``, never after the delivery's
  expiry, at most ``moments_max_attempts`` times. Other 4xx and any 3xx (redirects are not
  followed) fail at once. Failed and expired rows are the dead letters; ``replay`` re-queues
  one under the same id.
- **Circuit breaker.** After ``moments_breaker_failures`` consecutive retryable failures a
  destination host is left alone for ``moments_breaker_seconds`` (doubling while it keeps
  failing, at most ten minutes); its deliveries are deferred without using up attempts.
- **SSRF.** Every attempt re-checks the destination (DNS included) and connects to the
  checked address (:mod:`seamline.moments.destinations`).

Response bodies and error details are never stored: only the status code or the error's
class, so a webhook cannot be used to read internal services.
"""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from seamline.errors import Overloaded
from seamline.events.timestamps import utcnow
from seamline.moments import apprise_guard, signing
from seamline.moments.destinations import DestinationPolicy, DestinationRefused
from seamline.moments.rules import GUARDED_APPRISE, Action, Rule, parse_rule
from seamline.moments.runtime import idle_backoff
from seamline.moments.webpush import send_webpush
from seamline.store import Store, Writer
from seamline.store import moments as tables

log = logging.getLogger("seamline.moments")
MAX_BACKOFF = timedelta(hours=6)
USER_AGENT = "Seamline-Moments/1"
RECORD_LINGER = 0.02  # seconds the recorder waits to write outcomes together


@dataclass(frozen=True)
class Outcome:
    kind: Literal["delivered", "retry", "failed"]
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def classify(response: httpx.Response) -> Outcome:
    code = response.status_code
    if 200 <= code < 300:
        return Outcome("delivered", code)
    if 300 <= code < 400:
        return Outcome("failed", code, f"HTTP {code}: redirects are not followed")
    if code in (408, 425, 429) or code >= 500:
        return Outcome("retry", code, f"HTTP {code}",
                       retry_after_seconds(response.headers.get("retry-after")))  # fmt: skip
    return Outcome("failed", code, f"HTTP {code}")


def backoff(attempt: int, base: float, rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: base x 4^(attempt-1), full jitter over its
    upper half (so delays still grow), capped at six hours."""
    ceiling = min(base * 4 ** max(0, attempt - 1), MAX_BACKOFF.total_seconds())
    return (rng or random).uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class _Result:
    delivery_id: str
    instance_id: str
    action_index: int
    status: str
    attempts: int
    next_at: datetime
    code: int | None
    error: str | None
    now: datetime
    settle: bool  # final, and the rule has a next action: settle it (fallback or skip)


@dataclass
class _HostState:
    failures: int = 0
    opened: int = 0
    open_until: float = 0.0
    trial: bool = False


@dataclass
class CircuitBreaker:
    """Per destination host: closed -> open (after N failures) -> half-open (one trial)."""

    threshold: int = 5
    cooldown: float = 30.0
    max_cooldown: float = 600.0
    _hosts: dict[str, _HostState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, host: str, now: float) -> float:
        """0 when a request may go to ``host`` now, else seconds until it may."""
        with self._lock:
            state = self._hosts.get(host)
            if state is None or state.failures < self.threshold:
                return 0.0
            if now < state.open_until:
                return state.open_until - now
            if state.trial:  # half-open: one request at a time
                return min(self.cooldown, 5.0)
            state.trial = True
            return 0.0

    def record(self, host: str, ok: bool, now: float) -> None:
        with self._lock:
            state = self._hosts.setdefault(host, _HostState())
            state.trial = False
            if ok:
                self._hosts.pop(host, None)
                return
            state.failures += 1
            if state.failures >= self.threshold:
                state.opened += 1
                pause = min(self.cooldown * 2 ** (state.opened - 1), self.max_cooldown)
                state.open_until = now + pause
                if state.opened == 1:
                    log.warning("circuit open for %s: %d failures in a row", host, state.failures)

    def state(self, host: str) -> str:
        with self._lock:
            found = self._hosts.get(host)
        if found is None or found.failures < self.threshold:
            return "closed"
        return "open" if time.time() < found.open_until else "half-open"


def send_webhook(client: httpx.Client, policy: DestinationPolicy, action: Action,
                 delivery: dict[str, Any]) -> Outcome:  # fmt: skip
    """One signed attempt, connected to the checked address; never follows redirects."""
    try:
        checked = policy.check_url(action.url, "url")
    except DestinationRefused as exc:
        return Outcome("failed", None, exc.message[:300])
    body = str(delivery["payload"]).encode()
    headers = signing.headers(list(action.secrets), delivery["delivery_id"], int(time.time()), body)
    headers.update({"content-type": delivery["content_type"] or "application/json",
                    "user-agent": USER_AGENT, "host": checked.host_header})  # fmt: skip
    literal = checked.host == str(checked.addresses[0]) and len(checked.addresses) == 1
    extensions = {"sni_hostname": checked.host} if checked.scheme == "https" and not literal else {}
    error = "connection failed"
    for address in checked.addresses:
        try:
            response = client.post(checked.pinned_url(address), content=body, headers=headers,
                                   extensions=extensions)  # fmt: skip
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            error = type(exc).__name__
            continue  # try the next checked address
        except httpx.TimeoutException as exc:
            return Outcome("retry", None, type(exc).__name__)
        except httpx.HTTPError as exc:
            return Outcome("retry", None, type(exc).__name__)
        return classify(response)
    return Outcome("retry", None, error)


def send_apprise(policy: DestinationPolicy, action: Action, delivery: dict[str, Any]) -> Outcome:
    """Push, SMS, chat or email through Apprise (one notify call; Apprise says only yes/no).

    Every service that connects to a host named in its URL is guarded like a webhook
    (:mod:`seamline.moments.apprise_guard`), again at each attempt (DNS may have changed).
    For ``json://``, ``form://`` and ``xml://`` (and their ``s`` forms) the delivery id goes
    along as an ``Idempotency-Key`` header. Apprise resolves and connects by itself, so it
    cannot be pinned to the checked address.
    """
    import apprise

    url = action.url
    scheme = url.split("://", 1)[0].lower()
    try:
        apprise_guard.check(policy, url, "url")
    except DestinationRefused as exc:
        return Outcome("failed", None, exc.message[:300])
    if scheme in GUARDED_APPRISE:
        url += ("&" if "?" in url else "?") + f"+Idempotency-Key={delivery['delivery_id']}"
    notifier = apprise.Apprise()
    if not notifier.add(url):
        return Outcome("failed", None, "Apprise does not understand this URL")
    ok = notifier.notify(body=str(delivery["payload"]), title=str(delivery["title"] or ""))
    return Outcome("delivered") if ok else Outcome("retry", None, "Apprise reported a failure")


def _push_host(row: dict[str, Any]) -> str | None:
    """The push service's host of a web push delivery (its circuit breaker key)."""
    try:
        return urlsplit(json.loads(row["payload"])["subscription"]["endpoint"]).hostname
    except (ValueError, KeyError, TypeError):
        return None


class RuleVersions:
    """The rule each delivery was decided under (its URL and secrets), cached."""

    def __init__(self, store: Store):
        self._store = store
        self._cache: dict[tuple[str, int], Rule | None] = {}
        self._lock = threading.Lock()

    def get(self, rule_id: str, version: int) -> Rule | None:
        key = (rule_id, version)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        with self._store.cursor() as cur:
            text = tables.rule_version(cur, rule_id, version)
        rule = parse_rule(json.loads(text)) if text else None
        with self._lock:
            self._cache[key] = rule
        return rule


class DeliveryWorker:
    """Dispatcher + sender threads over the outbox."""

    def __init__(self, store: Store, writer: Writer, versions: RuleVersions,
                 policy: DestinationPolicy, *, poll_seconds: float, retry_base: float,
                 max_attempts: int, timeout: float, breaker: CircuitBreaker,
                 senders: int = 4, vapid_key: str = "", vapid_subject: str = ""):  # fmt: skip
        self._store = store
        self._writer = writer
        self.versions = versions
        self.policy = policy  # replaced as a whole (it is immutable) when settings change
        self._poll = poll_seconds
        self.retry_base = retry_base
        self.max_attempts = max_attempts
        self.breaker = breaker
        self.vapid_key, self.vapid_subject = vapid_key, vapid_subject
        self._client = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._results: queue.Queue[_Result | None] = queue.Queue()
        self._inflight: set[str] = set()
        # ids released while a dispatcher read was running: that read may predate their
        # outcome's commit (it saw them still pending), so it must not send them again
        self._released_during_read: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._dispatch, name="seamline-moments-outbox",
                                          daemon=True)]  # fmt: skip
        self._threads += [
            threading.Thread(target=self._send_loop, name=f"seamline-moments-send-{n}", daemon=True)
            for n in range(senders)
        ]
        self._recorder = threading.Thread(target=self._record_loop,
                                          name="seamline-moments-record", daemon=True)  # fmt: skip

    def start(self) -> DeliveryWorker:
        for thread in [*self._threads, self._recorder]:
            thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    @property
    def wake_event(self) -> threading.Event:
        """Setting it wakes the dispatcher (an event, not a callback: no reference cycle)."""
        return self._wake

    def stop(self, timeout: float = 5) -> None:
        """Stop taking rows; wait up to ``timeout`` for attempts in flight and write their
        outcomes. Unfinished rows stay pending and are sent again (same id) next time."""
        self._stopping.set()
        self._wake.set()
        for _ in self._threads[1:]:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._results.put(None)
        self._recorder.join(max(1.0, deadline - time.monotonic()))
        self._client.close()

    # -- dispatcher -------------------------------------------------------------------------
    def _dispatch(self) -> None:
        idle = self._poll
        while not self._stopping.is_set():
            # cleared before the read: a wake from now on is either seen by the read or
            # ends the wait below, never lost
            self._wake.clear()
            wait: float | None = self._poll
            try:
                wait = self._fill()
            except Exception:  # keep dispatching after a failed read
                log.exception("reading the moments outbox failed")
            if wait is None:  # nothing pending at all: whatever queues a delivery wakes us
                wait, idle = idle, idle_backoff(idle, self._poll)
            else:
                idle = self._poll
            self._wake.wait(wait)

    def _fill(self) -> float | None:
        """Hand the ready deliveries to the senders; returns how long to sleep, or None
        when no delivery is pending at all."""
        now = utcnow()
        with self._lock:
            self._released_during_read.clear()
        with self._store.cursor() as cur:
            rows = tables.ready_deliveries(cur, now, 200)
            upcoming = tables.next_attempt_at(cur) if not rows else None
        for row in rows:
            with self._lock:
                if (row["delivery_id"] in self._inflight
                        or row["delivery_id"] in self._released_during_read):  # fmt: skip
                    continue
                self._inflight.add(row["delivery_id"])
            self._queue.put(row)
        if upcoming is not None and upcoming > now:
            return min(self._poll, max(0.05, (upcoming - now).total_seconds()))
        return None if not rows and upcoming is None else self._poll

    # -- senders -------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            row = self._queue.get()
            if row is None:
                return
            try:
                if self._stopping.is_set():
                    self._release([row["delivery_id"]])
                else:
                    self._attempt(row)
            except Exception:  # one delivery must not kill a sender
                log.exception("delivery %s failed unexpectedly", row["delivery_id"])
                self._release([row["delivery_id"]])

    def _release(self, ids: list[str]) -> None:
        with self._lock:
            self._inflight.difference_update(ids)
            self._released_during_read.update(ids)

    # -- recording: outcomes are written in batches, one transaction for many ----------------
    def _record_loop(self) -> None:
        while True:
            first = self._results.get()
            if first is None:
                return
            time.sleep(RECORD_LINGER)  # gather outcomes: one commit for many
            batch = [first]
            while len(batch) < 500:
                try:
                    item = self._results.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._results.put(None)  # stop after this batch
                    break
                batch.append(item)
            try:
                self._writer.call(functools.partial(self._write, batch=batch)).result(60)
            except Overloaded:
                pass  # the writer is stopping: the rows stay pending for the next process
            except Exception:
                log.exception("recording %d delivery outcomes failed", len(batch))
            finally:
                # only now may the dispatcher see these rows again (else: a double send)
                self._release([item.delivery_id for item in batch])
            if any(item.settle and item.status != "delivered" for item in batch):
                self._wake.set()  # a fallback may have become pending

    @staticmethod
    def _write(con: tables.Connection, batch: list[_Result]) -> None:
        tables.record_attempts(con, [
            (r.delivery_id, r.status, r.attempts, r.next_at, r.code, r.error, r.now) for r in batch
        ])  # fmt: skip
        settled = [(r.instance_id, r.action_index, r.status == "delivered") for r in batch
                   if r.settle]  # fmt: skip
        if settled:
            tables.settle_many(con, settled, batch[-1].now)

    def _attempt(self, row: dict[str, Any]) -> None:
        now = utcnow()
        if now >= row["expires_at"]:
            self._finish(row, "expired", row["attempts"], now, None, "expired before delivery")
            return
        rule = self.versions.get(row["rule_id"], row["rule_version"])
        index = row["action_index"]
        if rule is None or index >= len(rule.actions):
            self._finish(row, "failed", row["attempts"], now, None, "the rule's action is gone")
            return
        action = rule.actions[index]
        host = (urlsplit(action.url).hostname or action.url) if "://" in action.url else action.url
        if action.kind == "webpush":
            host = _push_host(row) or host
        wait = self.breaker.wait(host, time.time())
        if wait > 0:  # circuit open: defer without using up an attempt
            self._record(row, "pending", row["attempts"], now + timedelta(seconds=wait),
                         row["last_status"], "circuit open for this host", now)  # fmt: skip
            return
        if action.kind == "webhook":
            outcome = send_webhook(self._client, self.policy, action, row)
        elif action.kind == "webpush":
            outcome = Outcome(*send_webpush(self._client, self.policy, row, self.vapid_key,
                                            self.vapid_subject))  # type: ignore[arg-type]  # fmt: skip
        else:
            outcome = send_apprise(self.policy, action, row)
        self.breaker.record(host, outcome.kind != "retry", time.time())
        attempts = row["attempts"] + 1
        now = utcnow()
        if outcome.kind == "delivered":
            self._finish(row, "delivered", attempts, now, outcome.status, None)
        elif outcome.kind == "failed":
            self._finish(row, "failed", attempts, now, outcome.status, outcome.error)
        elif attempts >= self.max_attempts:
            self._finish(row, "failed", attempts, now, outcome.status,
                         f"{outcome.error} (gave up after {attempts} attempts)")  # fmt: skip
        else:
            delay = max(backoff(attempts, self.retry_base), outcome.retry_after or 0.0)
            next_at = now + timedelta(seconds=delay)
            if next_at >= row["expires_at"]:
                error = f"{outcome.error}; the next attempt would be after expiry"
                self._finish(row, "expired", attempts, now, outcome.status, error)
            else:
                self._record(row, "pending", attempts, next_at, outcome.status, outcome.error, now)

    def _record(self, row: dict[str, Any], status: str, attempts: int, next_at: datetime,
                code: int | None, error: str | None, now: datetime) -> None:  # fmt: skip
        """Still pending: the next attempt's time (or a deferral: same ``attempts``)."""
        self._results.put(_Result(row["delivery_id"], row["instance_id"], row["action_index"],
                                  status, attempts, next_at, code, error, now, False))  # fmt: skip

    def _finish(self, row: dict[str, Any], status: str, attempts: int, now: datetime,
                code: int | None, error: str | None) -> None:  # fmt: skip
        """Final: delivered, failed or expired; the next fallback action is settled too."""
        if status != "delivered":
            log.warning("delivery %s %s: %s", row["delivery_id"], status, error)
        self._results.put(_Result(row["delivery_id"], row["instance_id"], row["action_index"],
                                  status, attempts, now, code, error, now,
                                  self._has_next(row)))  # fmt: skip

    def _has_next(self, row: dict[str, Any]) -> bool:
        """Is there an action after this one (a fallback to settle)? Unknown: assume so."""
        rule = self.versions.get(row["rule_id"], row["rule_version"])
        return rule is None or row["action_index"] + 1 < len(rule.actions)
