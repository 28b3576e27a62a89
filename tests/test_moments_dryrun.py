"""The dry run (``moments test``) honours every filter the runtime honours.

A real workspace runs the rules live over planted journeys; then the dry run is asked about
the same journeys and must reach the same outcome for each: event fields beyond properties
(``os_name``), triggers stored too late after they happened (``too_old``; the maximum age
is 2 s here) or that happened before the rule was saved (``before_rule``), and a frequency
cap shared by a category of rules (another rule's real send counts). Each of these
differed before (the dry run fired). Location parity is in ``test_moments_location.py``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import seamline
from tests.test_moments import SECRET, wait_until
from tests.webhook_receiver import Receiver


def hook(receiver: Receiver, path: str) -> dict[str, Any]:
    return {"webhook": {"url": f"{receiver.url}{path}", "secret": SECRET}}


def outcomes(result: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(m["outcome"], m.get("reason")) for m in result["moments"]]


def test_the_dry_run_reaches_the_runtimes_outcome_for_each_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEAMLINE_ALLOW_DESTINATIONS", "127.0.0.0/8")
    monkeypatch.setenv("SEAMLINE_MOMENTS_POLL_MS", "50")
    monkeypatch.setenv("SEAMLINE_MOMENTS_TRIGGER_MAX_AGE_SECONDS", "2")
    receiver = Receiver(SECRET).start()
    try:
        with seamline.open(tmp_path / "ws") as ws:
            ws.add_source("app", "mobile")
            before = datetime.now(UTC) - timedelta(minutes=5)
            ws.add_moment({"name": "old", "trigger": "Old Event",
                           "actions": [hook(receiver, "/old")]})  # fmt: skip
            saved_old = time.monotonic()
            trigger = {"event": "App Opened", "where": {"os_name": "iOS"}}
            ws.add_moment({"name": "ios-open", "trigger": trigger,
                           "actions": [hook(receiver, "/ios")]})  # fmt: skip
            for name in ("A", "B"):
                ws.add_moment({"name": f"promo-{name.lower()}", "trigger": f"Promo {name}",
                               "category": "promo", "cap": {"per": "1d", "max": 1},
                               "actions": [hook(receiver, f"/promo-{name.lower()}")]})  # fmt: skip
            time.sleep(max(0.0, 4.5 - (time.monotonic() - saved_old)))
            stamp = datetime.now(UTC)

            def event(name: str, user: str, at: datetime = stamp, **extra: Any) -> dict[str, Any]:
                return {"type": "track", "event": name, "userId": user,
                        "timestamp": at.isoformat(), **extra}  # fmt: skip

            ios = {"context": {"os": {"name": "iOS", "version": "18.1"}}}
            android = {"context": {"os": {"name": "Android", "version": "15"}}}
            ws.import_events("app", [
                event("App Opened", "p1", **ios),
                event("App Opened", "p5", **android),
                event("Promo A", "p2"),
                event("Old Event", "p3", stamp - timedelta(seconds=3.5)),  # after the rule,
                # but stored later than the maximum age (2 s here) after it happened
                event("App Opened", "p4", before, **ios),  # before the rule was saved
            ])  # fmt: skip
            assert wait_until(lambda: {m["name"]: m for m in ws.moment_stats()["moments"]}
                              ["promo-a"]["fired"] == 1)  # fmt: skip
            ws.import_events("app", [event("Promo B", "p2", datetime.now(UTC))])
            assert wait_until(lambda: {m["name"]: m for m in ws.moment_stats()["moments"]}
                              ["promo-b"]["capped"] == 1)  # fmt: skip
            live = {m["name"]: m for m in ws.moment_stats()["moments"]}
            assert live["ios-open"]["fired"] == 1 and live["ios-open"]["before_rule"] == 1
            assert live["old"]["too_old"] == 1 and live["old"]["triggered"] == 0
            assert len(receiver.wait_for("/ios", 1)) == 1 and receiver.for_path("/old") == []

            # the dry run agrees, one filter at a time
            assert outcomes(ws.test_moment("ios-open", "p1")) == [("fires", None)]
            assert outcomes(ws.test_moment("ios-open", "p5")) == []
            assert outcomes(ws.test_moment("promo-a", "p2")) == [("fires", None)]
            assert outcomes(ws.test_moment("promo-b", "p2")) == [("capped", "frequency_cap")]
            assert outcomes(ws.test_moment("old", "p3")) == [("ignored", "too_old")]
            assert outcomes(ws.test_moment("ios-open", "p4")) == [("ignored", "before_rule")]
            # asked to replay history as if live, the same journeys would fire
            assert outcomes(ws.test_moment("ios-open", "p4", replay_history=True)) == [
                ("fires", None)
            ]
            assert outcomes(ws.test_moment("old", "p3", replay_history=True)) == [
                ("fires", None)
            ]
    finally:
        receiver.stop()
