"""Synthetic worlds with planted seams of known size, and decoys that must not be flagged."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pytest

import seamline
from seamline.analytics.stats import benjamini_hochberg, two_proportion_p, wilson

END = datetime(2026, 11, 20, 0, 0)
START = END - timedelta(days=20)


class World:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.events: dict[str, list[dict[str, Any]]] = {"app": [], "calls": [], "mail": []}
        self.n = 0

    def add(self, source: str, person: str, when: datetime, event: str, **extra: Any) -> None:
        self.n += 1
        self.events[source].append({"type": "track", "event": event, "userId": person,
                                    "messageId": f"m{self.n}",
                                    "timestamp": when.isoformat() + "Z", **extra})  # fmt: skip

    def when(self) -> datetime:
        return START + timedelta(minutes=self.rng.randrange(0, 14 * 24 * 60))


def build(seed: int = 3) -> World:
    w = World(seed)
    rng = w.rng
    for i in range(1500):
        p, t = f"p{i}", w.when()
        version = "5.2.0" if i % 5 == 0 else "5.3.0"
        ctx = {"context": {"app": {"version": version}}}
        w.add("app", p, t, "Home", **ctx)
        w.add("app", p, t + timedelta(minutes=1), "Browse", **ctx)
        if rng.random() < 0.5:  # decoy: common, harmless; calls at the baseline rate
            w.add("app", p, t + timedelta(minutes=2), "Theme Changed", **ctx)
        declined = rng.random() < 0.3
        if declined:  # planted: 40% call within the hour
            w.add("app", p, t + timedelta(minutes=3), "Card Declined", **ctx)
        rate = 0.40 if declined else 0.04
        if rng.random() < rate:
            w.add("calls", p, t + timedelta(minutes=rng.randrange(5, 50)), "Call Started")
        # broken segment: activation completes 50% on 5.2.0, 95% elsewhere
        w.add("app", p, t + timedelta(hours=3), "Activation Started", **ctx)
        if rng.random() < (0.50 if version == "5.2.0" else 0.95):
            w.add("app", p, t + timedelta(hours=3, minutes=2), "Activation Completed", **ctx)
        # outcome seam: photos by email -> 40% approved, in-app upload -> 75%
        if i % 3 == 0:
            s = t + timedelta(hours=5)
            w.add("app", p, s, "Loan Started", **ctx)
            if rng.random() < 0.5:
                w.add("mail", p, s + timedelta(minutes=10), "Photos Requested")
                ok = rng.random() < 0.40
            else:
                w.add("app", p, s + timedelta(minutes=10), "Photos Uploaded", **ctx)
                ok = rng.random() < 0.75
            if ok:
                w.add("app", p, s + timedelta(days=2), "Loan Approved", **ctx)
    for i in range(12):  # small-sample fluke: 6 of 12 call, below minimum support
        p, t = f"rare{i}", w.when()
        w.add("app", p, t, "Rare Screen")
        if i % 2 == 0:
            w.add("calls", p, t + timedelta(minutes=10), "Call Started")
    for i in range(300):  # still-open windows: declined minutes before the end, no call yet
        w.add("app", f"late{i}", END - timedelta(minutes=20), "Card Declined")
    return w


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("seams")
    world = build()
    settings = seamline.settings.Settings(
        **{"outcome_events": "Loan Approved"}  # type: ignore[arg-type]
    ) if "outcome_events" in seamline.settings.Settings.__dataclass_fields__ else None
    with seamline.Workspace(data, settings) as ws:
        ws.add_source("app", "mobile")
        ws.add_source("calls", "call_center")
        ws.add_source("mail", "email")
        for source, events in world.events.items():
            for start in range(0, len(events), 5000):
                ws.import_events(source, events[start:start + 5000])
        seams = ws.seams(within="1h", funnel=["Activation Started", "Activation Completed"],
                         by=["app_version"], end=END).to_dict()  # fmt: skip
        everything = ws.seams(within="1h", include_all=True, end=END).to_dict()
    return {"seams": seams["seams"], "all": everything["seams"], "notes": seams["notes"]}


def find(seams: list[dict[str, Any]], kind: str, origin: str) -> dict[str, Any] | None:
    return next((s for s in seams if s["kind"] == kind and s["from"] == origin), None)


def test_planted_seams_rank_first(result: dict[str, Any]) -> None:
    ranked = [(s["kind"], s["from"]) for s in result["seams"]]
    assert set(ranked[:3]) == {("costly_contact", "Card Declined"),
                               ("segment", "Activation Started"),
                               ("outcome", "Loan Started")}, ranked  # fmt: skip


def test_planted_costly_contact_seam_at_its_true_rate(result: dict[str, Any]) -> None:
    top = find(result["seams"], "costly_contact", "Card Declined")
    assert top is not None and top["to_channel"] == "call_center"
    assert top["rate"] == pytest.approx(0.40, abs=0.05)
    assert top["baseline_rate"] == pytest.approx(0.06, abs=0.04)
    assert top["ci_low"] < 0.40 < top["ci_high"] and top["q_value"] < 1e-6
    assert top["lift"] > 4 and top["people_examples"]
    # censoring: 300 declines in still-open windows are not counted as "did not call"
    assert 400 < top["people"] < 520


def test_decoys_are_not_flagged(result: dict[str, Any]) -> None:
    flagged = {(s["kind"], s["from"]) for s in result["seams"]}
    assert ("costly_contact", "Theme Changed") not in flagged  # co-occurs, no effect
    assert ("costly_contact", "Rare Screen") not in flagged  # a fluke below min support
    assert find(result["all"], "costly_contact", "Rare Screen") is None
    theme = find(result["all"], "costly_contact", "Theme Changed")
    assert theme is not None and not theme["significant"]


def test_planted_outcome_and_segment_seams(result: dict[str, Any]) -> None:
    outcome = find(result["seams"], "outcome", "Loan Started")
    assert outcome is not None and outcome["to"] == "Photos Requested"
    assert outcome["rate"] == pytest.approx(0.40, abs=0.08)
    assert outcome["baseline_rate"] == pytest.approx(0.75, abs=0.08)
    segment = next(s for s in result["seams"] if s["kind"] == "segment")
    assert segment["segment"] == {"field": "app_version", "value": "5.2.0"}
    assert segment["rate"] == pytest.approx(0.50, abs=0.08)
    assert segment["baseline_rate"] == pytest.approx(0.95, abs=0.03)
    assert not any(s["kind"] == "segment" and s["segment"]["value"] == "5.3.0"
                   for s in result["seams"])  # fmt: skip
    assert "mix shift" in result["notes"][0]


def test_statistics_helpers() -> None:
    low, high = wilson(40, 100)
    assert low == pytest.approx(0.3094, abs=1e-3) and high == pytest.approx(0.4980, abs=1e-3)
    assert two_proportion_p(40, 100, 4, 100) < 1e-9
    assert two_proportion_p(4, 100, 40, 100) > 0.99
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.0533, 0.0533, 0.5],
                                                                        abs=1e-3)  # fmt: skip
