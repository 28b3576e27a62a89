"""Demo workspace: a mobile-first bank and card issuer ("Harbour Bank") over the last 30 days.

Every simulated customer has an app (iOS or Android) or, for a few, only the website; they get
marketing email, phone the call centre and visit branches. Events are Segment-shaped (``track``,
``identify``, ``screen``, ``page``) with the context real SDKs send, and they arrive through
:meth:`Workspace.import_events`, so timestamps are kept.

Identity that needs stitching
    The first app session is anonymous (``anonymousId`` only) until ``identify`` with the
    ``userId`` and ``traits.email`` / ``traits.phone``; later app events carry both ids. The
    website has its own ``anonymousId`` (another one again after an email click on the phone's
    browser) and logs in later, or never. Call-centre events know only the caller's number:
    ``anonymousId = "phone:+447..."`` and ``context.traits.phone``. Email events know only the
    address: ``anonymousId = "email:..."`` and ``context.traits.email``. Branch staff look the
    customer up, so branch events carry the ``userId``.

Planted seams (the true generating probabilities, also in :data:`PLANTED`)
    - **Card activation -> call centre.** A card activation attempt in the app fails with
      probability 0.12, but **0.60 on Android app version 5.2.0** (its activation step
      collapses: reason ``sdk_timeout``). After each ``Card Activation Failed`` the customer
      phones the call centre (``Call Started``, reason ``card_activation``) 3-55 minutes later
      with probability **0.35**; otherwise they retry at once with probability 0.5 (up to 3
      attempts) or come back in a later session with probability 0.6. After an app session
      without any failure the customer phones within an hour with probability **0.04** (the
      baseline). Measured per failing event, the 1-hour rate is a little above 0.35 because a
      quick retry may fail again and lead to a call within the same hour.
    - **Photos by email -> loans stall.** 10% of customers start a loan application. Web
      starters, and 40% of app starters, are asked for ID photos by email (``Photos Requested``
      from the email source); the rest take the photos in the app. Applications are
      **submitted with probability 0.40 via the email route vs 0.75 in the app**; 80% of
      submitted applications are approved (``Loan Application Approved``) 2-48 hours later,
      the rest declined. After ``Photos Requested``, 25% phone the call centre 1-23 hours later
      (reason ``loan_documents``).
    - **Android 5.2.0 checkout.** After ``Card Declined`` 60% tap retry (``Payment Retried``);
      a retry succeeds with probability 0.75, but **0.25 on Android 5.2.0**. A payment is
      declined at first with probability 0.08. After a payment that ends declined, 15% phone
      within an hour (reason ``card_declined``).
    - **Locked out.** Each password attempt at the first login fails with probability 0.10;
      after three failures the login is locked and half the customers phone within an hour.

Volume: about 50 events per customer (``people=2000`` -> ~100k events, ``people=20000`` ->
~1M). Everything is drawn from ``random.Random`` seeded by ``(seed, customer index)``, so the
same seed gives the same ``messageId`` values (a re-run stores nothing new) and a larger demo
contains the smaller one. Events after "now" (journeys still in progress) are not sent.

Measured on ``people=20000, seed=7`` (1.1M events) with the phone number from ``identify``
linking app users to calls: a call within 1 hour follows 40.5% of ``Card Activation Failed``
events (46% of the customers with a failure) vs 4.5% of ``App Opened`` and 4.4% of
``Card Activation Completed``; activation fails on 59% of attempts on Android 5.2.0 vs 9-14%
elsewhere; a retried payment succeeds 26% on Android 5.2.0 vs 72-75%; loan applications are
submitted 75% (app photos) vs 36% (photos by email; journeys near "now" are cut short) and
approved 56% vs 27%; 28% of ``Photos Requested`` are followed by a call within 24 hours.
"""

from __future__ import annotations

import json
import random
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from seamline.app import Workspace
from seamline.errors import BadRequest

DAY = 86_400.0
HOUR = 3_600.0
MINUTE = 60.0
WINDOW_DAYS = 30
CHUNK_EVENTS = 5000

#: (name, channel, unit) of the demo's sources.
SOURCES: tuple[tuple[str, str, str], ...] = (
    ("ios-app", "mobile", "digital"),
    ("android-app", "mobile", "digital"),
    ("website", "web", "digital"),
    ("call-center", "call_center", "operations"),
    ("email", "email", "marketing"),
    ("branches", "store", "retail"),
)


@dataclass(frozen=True)
class Planted:
    """The generating probabilities; analyses should recover these."""

    activation_fail: float = 0.12
    activation_fail_broken: float = 0.60  # Android 5.2.0
    call_after_activation_failure: float = 0.35
    call_after_clean_session: float = 0.04  # baseline
    activation_retry_now: float = 0.5
    activation_retry_later: float = 0.6
    loan_start: float = 0.10
    loan_email_route_from_app: float = 0.40
    loan_submitted_app_photos: float = 0.75
    loan_submitted_email_photos: float = 0.40
    loan_approved: float = 0.80
    call_after_photos_requested: float = 0.25
    payment_declined: float = 0.08
    payment_retry: float = 0.60
    payment_retry_ok: float = 0.75
    payment_retry_ok_broken: float = 0.25  # Android 5.2.0
    call_after_final_decline: float = 0.15
    login_attempt_fail: float = 0.10
    call_after_lockout: float = 0.5
    broken_platform: str = "android"
    broken_version: str = "5.2.0"


PLANTED = Planted()

# -- reference data ---------------------------------------------------------------------
_FIRST = (
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Grace", "Freya", "Lily", "Sophia", "Emily",
    "Aisha", "Zara", "Priya", "Chloe", "Ella", "Noah", "Oliver", "George", "Arthur", "Leo",
    "Harry", "Oscar", "Jack", "Charlie", "Muhammad", "Jacob", "Thomas", "Samuel", "Ethan",
    "Daniel", "Kwame", "Tomasz", "Luca", "Mateo", "Rhys", "Callum", "Sean", "Hannah", "Ruby",
)  # fmt: skip
_LAST = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall",
    "Khan", "Lewis", "Clarke", "Jackson", "Wood", "Harris", "Martin", "Cooper", "Hill", "Ward",
    "Hughes", "Ahmed", "Nowak", "Murphy", "Campbell", "Kelly", "Begum", "Okafor", "Singh",
)  # fmt: skip
_DOMAINS = (
    "gmail.com",
    "outlook.com",
    "yahoo.co.uk",
    "icloud.com",
    "hotmail.co.uk",
    "btinternet.com",
)

_APP_NAME = "Harbour Bank"
_IOS_VERSIONS = (("5.3.0", "5300"), ("5.2.3", "5231"), ("5.1.4", "5142"))
_IOS_VERSION_WEIGHTS = (50, 35, 15)
_ANDROID_VERSIONS = (("5.2.0", "52004"), ("5.1.3", "51031"), ("5.0.8", "50082"))
_ANDROID_VERSION_WEIGHTS = (40, 45, 15)
_IOS_MODELS = (
    "iPhone16,2",
    "iPhone15,4",
    "iPhone15,2",
    "iPhone14,7",
    "iPhone14,5",
    "iPhone14,6",
    "iPhone13,2",
)
_IOS_OS = ("18.1", "18.0.1", "17.6.1", "17.5.1", "16.7.10")
_ANDROID_MODELS = (
    ("samsung", "SM-S921B"), ("samsung", "SM-A546B"), ("samsung", "SM-S911B"),
    ("Google", "Pixel 8"), ("Google", "Pixel 7a"), ("Xiaomi", "23049RAD8C"),
    ("OnePlus", "CPH2449"), ("motorola", "moto g84 5G"),
)  # fmt: skip
_ANDROID_OS = ("14", "14", "13", "12", "15")
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.0 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/129.0.0.0 Safari/537.36",
)
_MOBILE_USER_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
)
_SITE = "https://www.harbourbank.example"
_PAGES = {
    "Home": ("/", "Harbour Bank - banking that fits in your pocket"),
    "Login": ("/login", "Log in - Harbour Bank"),
    "Accounts": ("/accounts", "Your accounts - Harbour Bank"),
    "Cards": ("/cards", "Cards - Harbour Bank"),
    "Payments": ("/payments", "Payments - Harbour Bank"),
    "Loans": ("/loans", "Personal loans - Harbour Bank"),
    "Apply for a Loan": ("/loans/apply", "Apply for a loan - Harbour Bank"),
    "Upload Documents": ("/loans/documents", "Upload your documents - Harbour Bank"),
    "Offers": ("/offers", "Offers - Harbour Bank"),
    "Help": ("/help", "Help centre - Harbour Bank"),
}
_BROWSE_SCREENS = (
    "Accounts",
    "Transactions",
    "Card Details",
    "Spending Insights",
    "Savings Pots",
    "Settings",
    "Statements",
    "Help",
)
_BROWSE_WEIGHTS = (30, 35, 12, 10, 8, 4, 4, 3)
_BROWSE_PAGES = ("Accounts", "Cards", "Payments", "Loans", "Offers", "Help")
_CALL_QUEUES = {
    "card_activation": "cards",
    "card_declined": "cards",
    "loan_documents": "lending",
    "login_locked": "security",
    "balance_query": "general",
    "lost_card": "cards",
    "fees": "general",
    "statement": "general",
    "fraud_concern": "security",
}
_BASELINE_REASONS = ("balance_query", "lost_card", "fees", "statement", "fraud_concern")
_BRANCHES = (
    "Leeds Briggate",
    "Manchester King St",
    "Bristol Broadmead",
    "Glasgow Buchanan St",
    "London Moorgate",
    "Cardiff Queen St",
)
_CAMPAIGNS = (
    (3.4, "cmp_spring_saver", "Grow your savings with 4.1% AER"),
    (10.4, "cmp_card_perks", "New: cashback at 200 retailers"),
    (17.4, "cmp_loan_offer", "Your pre-approved loan rate is ready"),
    (24.4, "cmp_app_update", "Pay faster with the new Harbour app"),
)
_HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 4, 7, 9, 8, 7, 8, 10, 9, 7, 7, 8, 9, 10, 11, 10, 8, 5, 3)
_HOURS = tuple(range(24))
_EPOCH = datetime(1970, 1, 1)


def _hex_id(rng: random.Random, upper: bool = False) -> str:
    h = f"{rng.getrandbits(128):032x}"
    text = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"
    return text.upper() if upper else text


class _Sink:
    """Collects events per source; stamps messageId and times; drops the future."""

    def __init__(self, base: datetime, horizon: float):
        self.base = base
        self.base_ms = round((base - _EPOCH).total_seconds() * 1000)
        self.horizon = horizon
        self.buffers: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in SOURCES}
        self.generated = 0
        self._minutes: dict[int, str] = {}

    def stamp(self, t: float) -> str:
        """``base + t`` seconds as ISO-8601 UTC with milliseconds (datetime.isoformat is slow)."""
        minute, rest = divmod(self.base_ms + int(t * 1000), 60_000)
        prefix = self._minutes.get(minute)
        if prefix is None:
            start = _EPOCH + timedelta(minutes=minute)
            prefix = self._minutes[minute] = start.strftime("%Y-%m-%dT%H:%M:")
        return f"{prefix}{rest // 1000:02d}.{rest % 1000:03d}Z"


class _Surface:
    """One place a customer acts through: an app install, or a browser with its cookie."""

    def __init__(
        self,
        person: _Person,
        source: str,
        anonymous_id: str,
        context: dict[str, Any],
        *,
        web: bool,
        id_prefix: str = "",
    ):
        self.person = person
        self.source = source
        self.anonymous_id = anonymous_id
        self.context = context
        self.web = web
        self.id_prefix = id_prefix
        self.logged_in = False

    def _send(self, t: float, body: dict[str, Any]) -> None:
        person = self.person
        body["anonymousId"] = self.anonymous_id
        if self.logged_in:
            body["userId"] = person.user_id
        person.emit(self.source, t, body, sdk=True, id_prefix=self.id_prefix)

    def view(self, t: float, name: str) -> None:
        if self.web:
            path, title = _PAGES[name]
            page = {"path": path, "url": _SITE + path, "title": title, "referrer": "", "search": ""}
            context = {**self.context, "page": page}
            self._send(t, {"type": "page", "name": name, "properties": page, "context": context})
        else:
            body = {"type": "screen", "name": name, "properties": {}, "context": self.context}
            self._send(t, body)

    def track(self, t: float, event: str, properties: dict[str, Any] | None = None) -> None:
        body = {
            "type": "track",
            "event": event,
            "properties": properties or {},
            "context": self.context,
        }
        self._send(t, body)

    def login(self, t: float, method: str = "password") -> float:
        """Identify, then track the successful login; returns the time after it."""
        person = self.person
        self.logged_in = True
        traits = {
            "email": person.email,
            "phone": person.phone,
            "firstName": person.first,
            "lastName": person.last,
            "customerSince": person.customer_since,
            "segment": person.segment,
        }
        self._send(t, {"type": "identify", "traits": traits, "context": self.context})
        t += 0.2
        self.track(t, "Login Succeeded", {"method": method})
        return t


class _Person:
    def __init__(self, sink: _Sink, index: int, seed: int):
        self.sink = sink
        rng = self.rng = random.Random(seed * 1_000_003 + index)
        self.index = index
        self.user_id = f"cus_{(index * 2_654_435_761 + seed * 97) % 0xFFFFFFFF:08x}"
        self.first = rng.choice(_FIRST)
        self.last = rng.choice(_LAST)
        self.email = f"{self.first}.{self.last}{index}@{rng.choice(_DOMAINS)}".lower()
        self.phone = f"+447{400_000_000 + (index * 7919 + seed * 131) % 599_999_999:09d}"
        self.customer_since = f"{2015 + rng.randrange(10)}-{1 + rng.randrange(12):02d}-01"
        self.segment = "premium" if rng.random() < 0.15 else "standard"
        roll = rng.random()
        self.platform = "ios" if roll < 0.48 else "android" if roll < 0.90 else "web"
        first_octet = rng.choice((81, 86, 90, 92, 109, 176, 212))
        self.ip = (
            f"{first_octet}.{rng.randrange(256)}.{rng.randrange(256)}.{1 + rng.randrange(254)}"
        )
        self.broken = False
        self.activation_pending = False
        self.activation_attempt = 0
        self.app: _Surface | None = None
        self.web: _Surface | None = None
        if self.platform == "ios":
            version, build = rng.choices(_IOS_VERSIONS, _IOS_VERSION_WEIGHTS)[0]
            device = {
                "id": _hex_id(rng, upper=True), "type": "ios", "manufacturer": "Apple",
                "model": rng.choice(_IOS_MODELS), "name": "iPhone",
            }  # fmt: skip
            os = {"name": "iOS", "version": rng.choice(_IOS_OS)}
            library = {"name": "analytics-swift", "version": "1.6.2"}
            self.app = self._app_surface("ios-app", version, build, device, os, library, upper=True)
        elif self.platform == "android":
            version, build = rng.choices(_ANDROID_VERSIONS, _ANDROID_VERSION_WEIGHTS)[0]
            maker, model = rng.choice(_ANDROID_MODELS)
            device = {
                "id": f"{rng.getrandbits(64):016x}", "type": "android", "manufacturer": maker,
                "model": model, "name": model,
            }  # fmt: skip
            os = {"name": "Android", "version": rng.choice(_ANDROID_OS)}
            library = {"name": "analytics-kotlin", "version": "1.17.0"}
            self.app = self._app_surface("android-app", version, build, device, os, library)
            self.broken = version == PLANTED.broken_version
        self.call_context = {
            "traits": {"phone": self.phone},
            "library": {"name": "analytics-python", "version": "2.3.3"},
        }
        self.email_context = {
            "traits": {"email": self.email},
            "library": {"name": "analytics-node", "version": "2.1.3"},
        }
        self.branch_context = {"library": {"name": "analytics-python", "version": "2.3.3"}}

    # -- plumbing ----------------------------------------------------------------------
    def _app_surface(
        self,
        source: str,
        version: str,
        build: str,
        device: dict[str, Any],
        os: dict[str, Any],
        library: dict[str, Any],
        upper: bool = False,
    ) -> _Surface:
        context = {
            "app": {"name": _APP_NAME, "version": version, "build": build,
                    "namespace": "example.harbourbank.app"},
            "device": device,
            "os": os,
            "library": library,
            "locale": "en-GB",
            "timezone": "Europe/London",
            "ip": self.ip,
            "network": {"wifi": self.rng.random() < 0.6, "cellular": True},
        }  # fmt: skip
        return _Surface(self, source, _hex_id(self.rng, upper=upper), context, web=False)

    def _web_surface(self, user_agent: str) -> _Surface:
        context = {
            "library": {"name": "analytics.js", "version": "npm:next-1.72.0"},
            "userAgent": user_agent,
            "locale": "en-GB",
            "timezone": "Europe/London",
            "ip": self.ip,
        }
        return _Surface(
            self, "website", _hex_id(self.rng), context, web=True, id_prefix="ajs-next-"
        )

    def emit(
        self, source: str, t: float, body: dict[str, Any], *, sdk: bool = False, id_prefix: str = ""
    ) -> None:
        rng = self.rng
        message_id = id_prefix + _hex_id(rng)
        sent_delay = 0.5 + rng.random() * 20.0 if sdk else 0.0
        sink = self.sink
        if t > sink.horizon:
            return
        body["messageId"] = message_id
        body["timestamp"] = sink.stamp(t)
        if sdk:
            body["sentAt"] = sink.stamp(t + sent_delay)
        sink.buffers[source].append(body)
        sink.generated += 1

    def when(self) -> float:
        rng = self.rng
        hour = rng.choices(_HOURS, _HOUR_WEIGHTS)[0]
        return rng.randrange(WINDOW_DAYS) * DAY + (hour + rng.random()) * HOUR

    def gap(self, low: float, high: float) -> float:
        return low + self.rng.random() * (high - low)

    def call(self, t: float, reason: str) -> None:
        rng = self.rng
        call_id = f"CA{rng.getrandbits(48):012x}"
        queue = _CALL_QUEUES[reason]
        body = {
            "type": "track", "event": "Call Started", "anonymousId": f"phone:{self.phone}",
            "properties": {"call_id": call_id, "direction": "inbound", "queue": queue,
                           "reason": reason, "ivr_path": f"main>{queue}"},
            "context": self.call_context,
        }  # fmt: skip
        self.emit("call-center", t, body)
        wait = 20 + rng.random() * 400
        talk = 90 + rng.random() * 900
        body = {
            "type": "track", "event": "Call Ended", "anonymousId": f"phone:{self.phone}",
            "properties": {"call_id": call_id, "queue": queue, "reason": reason,
                           "wait_seconds": round(wait), "duration_seconds": round(wait + talk),
                           "agent_id": f"agent_{rng.randrange(1, 80):03d}",
                           "resolved": rng.random() < 0.8},
            "context": self.call_context,
        }  # fmt: skip
        self.emit("call-center", t + wait + talk, body)

    def send_email(self, t: float, event: str, properties: dict[str, Any]) -> None:
        body = {
            "type": "track",
            "event": event,
            "anonymousId": f"email:{self.email}",
            "properties": properties,
            "context": self.email_context,
        }
        self.emit("email", t, body)

    def branch(self, t: float, event: str, properties: dict[str, Any]) -> None:
        body = {
            "type": "track",
            "event": event,
            "userId": self.user_id,
            "properties": properties,
            "context": self.branch_context,
        }
        self.emit("branches", t, body)

    def web_surface(self) -> _Surface:
        if self.web is None:
            self.web = self._web_surface(self.rng.choice(_USER_AGENTS))
        return self.web

    # -- the customer's month ------------------------------------------------------------
    def live(self) -> None:
        rng = self.rng
        roll = rng.random()
        sessions = (
            1 + rng.randrange(4) if roll < 0.30
            else 5 + rng.randrange(6) if roll < 0.80
            else 12 + rng.randrange(13)
        )  # fmt: skip
        if self.app is None:
            main = self.web_surface()
            sessions = max(1, sessions // 2)
            web_sessions = 0
        else:
            main = self.app
            web_sessions = 1 + rng.randrange(4) if rng.random() < 0.25 else 0
        times = sorted(self.when() for _ in range(sessions))
        activation_at = rng.randrange(sessions) if self.app and rng.random() < 0.30 else -1
        loan_at = rng.randrange(sessions) if rng.random() < PLANTED.loan_start else -1
        for n, t in enumerate(times):
            self.session(main, t, activation=n == activation_at, loan=n == loan_at)
        if web_sessions:
            web = self.web_surface()
            for t in sorted(self.when() for _ in range(web_sessions)):
                self.session(web, t, activation=False, loan=False)
        self.campaigns()
        if rng.random() < 0.06:
            reason = rng.choice(("cash_deposit", "account_query", "mortgage_appointment"))
            self.branch(
                self.when(),
                "Branch Visit",
                {
                    "branch": rng.choice(_BRANCHES),
                    "reason": reason,
                    "staff_id": f"st_{rng.randrange(1, 300):04d}",
                },
            )
        if rng.random() < 0.08:
            self.call(self.when(), rng.choice(_BASELINE_REASONS))

    def session(self, s: _Surface, t: float, *, activation: bool, loan: bool) -> None:
        rng = self.rng
        failed = False
        if s.web:
            s.view(t, "Home")
            t += self.gap(5, 60)
            if not s.logged_in and rng.random() < 0.5:
                s.view(t, rng.choice(_BROWSE_PAGES))
                t += self.gap(10, 90)
        else:
            s.track(t, "App Opened", {"from_background": s.logged_in and rng.random() < 0.4})
            t += self.gap(1, 4)
        if not s.logged_in:
            t, ok = self.first_login(s, t)
            if not ok:
                return
        elif not s.web:
            if rng.random() < 0.03:
                s.track(t, "Login Failed", {"method": "biometric", "reason": "not_recognised"})
                t += self.gap(3, 15)
                t = s.login(t, method="passcode")
            else:
                s.track(t, "Login Succeeded", {"method": "biometric"})
            t += self.gap(0.5, 3)
            s.view(t, "Home")
        t += self.gap(3, 40)
        for _ in range(rng.randrange(1, 4)):
            if s.web:
                s.view(t, rng.choice(_BROWSE_PAGES))
            else:
                s.view(t, rng.choices(_BROWSE_SCREENS, _BROWSE_WEIGHTS)[0])
            t += self.gap(5, 120)
        if (
            (activation or self.activation_pending)
            and not s.web
            and (activation or rng.random() < PLANTED.activation_retry_later)
        ):
            self.activation_pending = False
            t, failed = self.activate(s, t)
        if rng.random() < 0.2:
            t, declined = self.payment(s, t)
            failed = failed or declined
        if loan:
            t = self.loan(s, t)
        if not failed and rng.random() < PLANTED.call_after_clean_session:
            self.call(t + self.gap(5 * MINUTE, 55 * MINUTE), rng.choice(_BASELINE_REASONS))

    def first_login(self, s: _Surface, t: float) -> tuple[float, bool]:
        """Anonymous until the password is right; three failures lock the login."""
        rng = self.rng
        if not s.web:
            s.view(t, "Welcome")
            t += self.gap(2, 20)
        s.view(t, "Login")
        for attempt in (1, 2, 3):
            t += self.gap(8, 40)
            if rng.random() >= PLANTED.login_attempt_fail:
                t = s.login(t)
                if not s.web:
                    t += self.gap(0.5, 3)
                    s.view(t, "Home")
                return t, True
            reason = "locked" if attempt == 3 else "wrong_password"
            s.track(t, "Login Failed", {"method": "password", "reason": reason, "attempt": attempt})
        if rng.random() < PLANTED.call_after_lockout:
            self.call(t + self.gap(2 * MINUTE, 50 * MINUTE), "login_locked")
        return t, False

    def activate(self, s: _Surface, t: float) -> tuple[float, bool]:
        """Card activation attempts in the app; True when it ended failed."""
        rng = self.rng
        fail = PLANTED.activation_fail_broken if self.broken else PLANTED.activation_fail
        s.view(t, "Activate Card")
        while True:
            self.activation_attempt += 1
            attempt = self.activation_attempt
            t += self.gap(10, 60)
            s.track(
                t,
                "Card Activation Started",
                {"card_type": "debit", "attempt": attempt, "entry": "home_banner"},
            )
            t += self.gap(15, 120)
            if rng.random() >= fail:
                s.track(t, "Card Activation Completed", {"card_type": "debit", "attempt": attempt})
                return t, False
            if self.broken:
                reason = "sdk_timeout" if rng.random() < 0.8 else "cvv_mismatch"
            else:
                reason = rng.choice(("cvv_mismatch", "card_not_found", "3ds_error", "cvv_mismatch"))
            s.track(
                t,
                "Card Activation Failed",
                {"card_type": "debit", "attempt": attempt, "reason": reason},
            )
            if rng.random() < PLANTED.call_after_activation_failure:
                self.call(t + self.gap(3 * MINUTE, 55 * MINUTE), "card_activation")
                return t, True
            if attempt >= 3 or rng.random() >= PLANTED.activation_retry_now:
                self.activation_pending = True
                return t, True

    def payment(self, s: _Surface, t: float) -> tuple[float, bool]:
        """An in-app payment; True when it ended declined."""
        rng = self.rng
        s.view(t, "Payments")
        t += self.gap(10, 90)
        payment = {
            "payment_id": f"pay_{rng.getrandbits(40):010x}",
            "amount": round(5 + rng.random() ** 2 * 400, 2),
            "currency": "GBP",
            "payee_type": rng.choice(("merchant", "merchant", "person", "bill")),
        }
        s.track(t, "Payment Started", payment)
        t += self.gap(2, 10)
        if rng.random() >= PLANTED.payment_declined:
            s.track(t, "Payment Succeeded", payment)
            return t, False
        reason = rng.choice(("insufficient_funds", "3ds_failed", "fraud_check", "limit_exceeded"))
        s.track(t, "Card Declined", {**payment, "reason": reason, "attempt": 1})
        if rng.random() < PLANTED.payment_retry:
            t += self.gap(15, 180)
            s.track(t, "Payment Retried", {**payment, "attempt": 2})
            t += self.gap(2, 10)
            ok = PLANTED.payment_retry_ok_broken if self.broken else PLANTED.payment_retry_ok
            if rng.random() < ok:
                s.track(t, "Payment Succeeded", {**payment, "attempt": 2})
                return t, False
            failure = "app_error" if self.broken else reason
            s.track(t, "Card Declined", {**payment, "reason": failure, "attempt": 2})
        if rng.random() < PLANTED.call_after_final_decline:
            self.call(t + self.gap(2 * MINUTE, 50 * MINUTE), "card_declined")
        return t, True

    def loan(self, s: _Surface, t: float) -> float:
        rng = self.rng
        application = {
            "application_id": f"app_{rng.getrandbits(40):010x}",
            "product": "personal_loan",
            "amount": 1000 * rng.randrange(1, 26),
            "term_months": rng.choice((12, 24, 36, 48, 60)),
        }
        s.view(t, "Apply for a Loan" if s.web else "Loan Offer")
        t += self.gap(20, 180)
        s.track(t, "Loan Application Started", application)
        email_route = s.web or rng.random() < PLANTED.loan_email_route_from_app
        ids = {"application_id": application["application_id"]}
        if not email_route:
            complete = rng.random() < PLANTED.loan_submitted_app_photos
            t += self.gap(30, 200)
            s.view(t, "Document Capture")
            if complete or rng.random() < 0.5:
                t += self.gap(40, 240)
                s.track(t, "Photos Uploaded", {**ids, "method": "in_app_camera", "photos": 2})
            if complete:
                t += self.gap(20, 120)
                s.track(t, "Loan Application Submitted", application)
                self.decision(s, t, application)
            return t
        complete = rng.random() < PLANTED.loan_submitted_email_photos
        requested = t + self.gap(5 * MINUTE, 40 * MINUTE)
        template = {"template": "loan_documents_request", **ids}
        self.send_email(
            requested,
            "Photos Requested",
            {**template, "documents": ["id_front", "id_back", "proof_of_address"]},
        )
        if rng.random() < PLANTED.call_after_photos_requested:
            self.call(requested + self.gap(1 * HOUR, 23 * HOUR), "loan_documents")
        if not (complete or rng.random() < 0.55):
            return t
        opened = requested + self.gap(10 * MINUTE, 20 * HOUR)
        self.send_email(opened, "Email Opened", template)
        if not complete:
            return t
        uploaded = opened + self.gap(5 * MINUTE, 3 * DAY)
        if rng.random() < 0.7:
            self.send_email(
                uploaded - self.gap(5, 60),
                "Email Clicked",
                {**template, "link": "upload_documents"},
            )
            web = self.web_surface()
            web.view(uploaded, "Upload Documents")
            if not web.logged_in:
                uploaded = web.login(uploaded + self.gap(10, 40))
            uploaded += self.gap(60, 400)
            web.track(uploaded, "Photos Uploaded", {**ids, "method": "web_upload", "photos": 3})
            uploaded += self.gap(10, 60)
            web.track(uploaded, "Loan Application Submitted", application)
        else:
            props = {"branch": rng.choice(_BRANCHES), "staff_id": f"st_{rng.randrange(1, 300):04d}"}
            self.branch(uploaded, "Branch Visit", {**props, "reason": "loan_documents"})
            uploaded += self.gap(5 * MINUTE, 20 * MINUTE)
            self.branch(
                uploaded, "Photos Uploaded", {**ids, **props, "method": "branch_scan", "photos": 3}
            )
            uploaded += self.gap(60, 600)
            self.branch(uploaded, "Loan Application Submitted", {**application, **props})
        self.decision(s, uploaded, application)
        return t

    def decision(self, s: _Surface, t: float, application: dict[str, Any]) -> None:
        rng = self.rng
        t += self.gap(2 * HOUR, 48 * HOUR)
        ids = {"application_id": application["application_id"], "amount": application["amount"]}
        if rng.random() < PLANTED.loan_approved:
            apr = round(6.4 + rng.random() * 12, 1)
            s.track(t, "Loan Application Approved", {**ids, "apr": apr})
        else:
            s.track(t, "Loan Application Declined", {**ids, "reason": "affordability"})

    def campaigns(self) -> None:
        rng = self.rng
        for day, campaign_id, subject in _CAMPAIGNS:
            if rng.random() >= 0.6:
                continue
            props = {"campaign_id": campaign_id, "subject": subject}
            t = day * DAY + self.gap(0, 2 * HOUR)
            self.send_email(t, "Email Delivered", props)
            if rng.random() >= 0.35:
                continue
            t += self.gap(5 * MINUTE, 2 * DAY)
            self.send_email(t, "Email Opened", props)
            if rng.random() >= 0.25:
                continue
            t += self.gap(5, 120)
            self.send_email(t, "Email Clicked", {**props, "link": "offer"})
            # the phone's browser: a cookie of its own, rarely logged in
            browser = self._web_surface(_MOBILE_USER_AGENT)
            t += self.gap(1, 4)
            browser.view(t, "Offers")
            if rng.random() < 0.2:
                t = browser.login(t + self.gap(20, 90))
                browser.view(t + self.gap(2, 10), "Accounts")


def _ensure_sources(workspace: Workspace) -> None:
    existing = {s["name"] for s in workspace.sources()}
    for name, channel, unit in SOURCES:
        if name not in existing:
            workspace.add_source(name, channel, unit)


#: The demo bank's declared outcomes, written to the workspace's settings.json (if that
#: file does not set them already) so `outcomes`, seams and the dashboard use them.
DEMO_SETTINGS = {
    "outcome_events": "Loan Application Approved,Card Activation Completed,Payment Succeeded",
}


def write_demo_settings(data_dir: Path) -> dict[str, Any]:
    """Merge :data:`DEMO_SETTINGS` into ``<data_dir>/settings.json``, keeping what is set."""
    path = Path(data_dir) / "settings.json"
    try:
        current: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    except ValueError as exc:
        raise BadRequest(f"{path} is not valid JSON: {exc}; fix or delete it.") from None
    merged = {**DEMO_SETTINGS, **current}
    if merged != current:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(merged, indent=2) + "\n")
    return merged


def build_demo(
    workspace: Workspace,
    *,
    people: int = 2000,
    seed: int = 7,
    console: Console | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Simulate ``people`` customers over the 30 days before ``now`` and import their events.

    Returns ``{"events": stored, "people", "sources", "duplicates", "failed", "generated"}``;
    running it again with the same seed stores nothing new.
    """
    if people < 0:
        raise BadRequest("--people must be zero or more.", code="invalid_people")
    console = console or Console(stderr=True)
    _ensure_sources(workspace)
    end = now or datetime.now(UTC)
    if end.tzinfo is not None:
        end = end.astimezone(UTC).replace(tzinfo=None)
    end = end.replace(microsecond=0)
    horizon = WINDOW_DAYS * DAY
    sink = _Sink(end - timedelta(seconds=horizon), horizon)
    totals = {"stored": 0, "duplicates": 0, "failed": 0}
    # One importer thread: DuckDB's append releases the GIL, so it overlaps the simulation.
    pending: deque[Future[dict[str, Any]]] = deque()

    def collect(keep: int) -> None:
        while len(pending) > keep:
            result = pending.popleft().result()
            for key in totals:
                totals[key] += result[key]

    def flush(executor: ThreadPoolExecutor, source: str) -> None:
        chunk = sink.buffers[source]
        if chunk:
            sink.buffers[source] = []
            pending.append(executor.submit(workspace.import_events, source, chunk))
            collect(keep=2)

    with (
        Progress(
            TextColumn("[bold]demo[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[events]:,} events"),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="seamline-demo") as executor,
    ):
        task = progress.add_task("customers", total=people, events=0)
        try:
            for index in range(people):
                _Person(sink, index, seed).live()
                for source, buffer in sink.buffers.items():
                    if len(buffer) >= CHUNK_EVENTS:
                        flush(executor, source)
                if index % 50 == 49:
                    progress.update(task, completed=index + 1, events=sink.generated)
            for source in sink.buffers:
                flush(executor, source)
            collect(keep=0)
        finally:
            for future in pending:
                future.cancel()
        progress.update(task, completed=people, events=sink.generated)
    return {
        "events": totals["stored"],
        "people": people,
        "sources": workspace.sources(),
        "duplicates": totals["duplicates"],
        "failed": totals["failed"],
        "generated": sink.generated,
    }
