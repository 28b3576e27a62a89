"""Golden semantics: tiny hand-written streams with the counts each funnel rule must give.

Each case is a list of (person, minute, event[, properties]) and the expected people per
step. They pin the rules the README states, so numbers can be checked against other tools.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import seamline
from seamline.errors import BadRequest

T0 = datetime(2026, 11, 2, 9, 0)
Stream = list[tuple[Any, ...]]


def workspace(tmp_path: Path, stream: Stream) -> seamline.Workspace:
    ws = seamline.open(tmp_path / "ws")
    ws.add_source("app", "mobile")
    ws.add_source("calls", "call_center")
    events = {"app": [], "calls": []}  # type: dict[str, list[dict[str, Any]]]
    for n, (person, minute, name, *rest) in enumerate(stream):
        props = rest[0] if rest else {}
        source = "calls" if name.startswith("Call") else "app"
        events[source].append({
            "type": "track", "event": name, "userId": person, "messageId": f"m{n}",
            "timestamp": (T0 + timedelta(minutes=minute)).isoformat() + "Z",
            "properties": props, "context": {"app": {"version": props.get("v", "1.0")}},
        })  # fmt: skip
    for source, batch in events.items():
        if batch:
            ws.import_events(source, batch)
    return ws


def people(ws: seamline.Workspace, steps: list[str], **options: Any) -> list[int]:
    options.setdefault("end", T0 + timedelta(days=30))
    return [s["people"] for s in ws.funnel(steps, **options).to_dict()["steps"]]


CASES: list[tuple[str, Stream, list[str], dict[str, Any], list[int]]] = [
    ("other events may come between steps",
     [("a", 0, "A"), ("a", 1, "X"), ("a", 2, "B"), ("a", 3, "Y"), ("a", 4, "C")],
     ["A", "B", "C"], {}, [1, 1, 1]),
    ("order matters: B before A does not count",
     [("a", 0, "B"), ("a", 1, "A")], ["A", "B"], {}, [1, 0]),
    ("repeating a step never counts twice",
     [("a", 0, "A"), ("a", 1, "A"), ("a", 2, "B"), ("a", 3, "B")], ["A", "B"], {}, [1, 1]),
    ("the window runs from step 1 and its edge is inclusive",
     [("a", 0, "A"), ("a", 30, "B"), ("a", 60, "C"), ("b", 0, "A"), ("b", 30, "B"),
      ("b", 61, "C")],
     ["A", "B", "C"], {"within": "1h"}, [2, 2, 1]),
    ("a later attempt can reach further (furthest step over attempts)",
     [("a", 0, "A"), ("a", 200, "A"), ("a", 201, "B"), ("a", 202, "C")],
     ["A", "B", "C"], {"within": "1h"}, [1, 1, 1]),
    ("ties at the same timestamp are taken in step order",
     [("a", 0, "B"), ("a", 0, "A"), ("a", 0, "C")], ["A", "B", "C"], {}, [1, 1, 1]),
    ("one event never fills two steps",
     [("a", 0, "A")], ["A", "A"], {}, [1, 0]),
    ("the same event twice fills a repeated step",
     [("a", 0, "A"), ("a", 5, "A")], ["A", "A"], {}, [1, 1]),
    ("strict: nothing may come between steps",
     [("a", 0, "A"), ("a", 1, "X"), ("a", 2, "B"), ("b", 0, "A"), ("b", 1, "B")],
     ["A", "B"], {"strict": True}, [2, 1]),
    ("per-step window bounds the gap from the previous step",
     [("a", 0, "A"), ("a", 5, "B"), ("a", 30, "C"), ("b", 0, "A"), ("b", 5, "B"),
      ("b", 10, "C")],
     ["A", "B", "C"], {"step_windows": [None, "10m"]}, [2, 2, 1]),
    ("an exclusion between the steps drops the person",
     [("a", 0, "A"), ("a", 1, "Call Started"), ("a", 2, "B"), ("b", 0, "A"), ("b", 2, "B"),
      ("b", 3, "Call Started")],
     ["A", "B"], {"exclude": ["Call Started"]}, [1, 1]),
    ("an exclusion in an unfinished attempt's window drops the person",
     [("a", 0, "A"), ("a", 1, "Call Started")], ["A", "B"], {"exclude": ["Call Started"]},
     [0, 0]),
    ("property filters narrow a step",
     [("a", 0, "A"), ("a", 1, "Buy", {"plan": "pro"}), ("b", 0, "A"),
      ("b", 1, "Buy", {"plan": "free"})],
     ["A", "Buy[properties.plan=pro]"], {}, [2, 1]),
]  # fmt: skip


@pytest.mark.parametrize(("stream", "steps", "options", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
def test_golden_counts(tmp_path: Path, stream: Stream, steps: list[str], options: dict[str, Any],
                       expected: list[int]) -> None:  # fmt: skip
    with workspace(tmp_path, stream) as ws:
        assert people(ws, steps, **options) == expected


def test_in_progress_is_not_dropped(tmp_path: Path) -> None:
    stream = [("a", 0, "A"), ("b", 0, "A"), ("b", 5, "B"), ("c", -3000, "A")]
    with workspace(tmp_path, stream) as ws:
        # as of 1 h after T0 with a 1 day window: a is still inside its window, c is not
        steps = ws.funnel(["A", "B"], within="1d", end=T0 + timedelta(hours=1))["steps"]
        assert steps[1]["people"] == 1
        assert steps[1]["in_progress"] == 1 and steps[1]["dropped"] == 1


def test_time_to_convert_and_intervals(tmp_path: Path) -> None:
    stream = [("a", 0, "A"), ("a", 2, "B"), ("b", 0, "A"), ("b", 10, "B"), ("c", 0, "A"),
              ("c", 4, "B"), ("d", 0, "A")]  # fmt: skip
    with workspace(tmp_path, stream) as ws:
        step = ws.funnel(["A", "B"], end=T0 + timedelta(days=30))["steps"][1]
    assert step["people"] == 3 and step["conversion"] == 0.75
    assert step["median_seconds"] == 240 and step["p90_seconds"] == pytest.approx(528)
    assert 0.3 < step["ci_low"] < 0.75 < step["ci_high"] <= 1


def test_breakdown_first_touch_and_at_step(tmp_path: Path) -> None:
    stream = [("a", 0, "A", {"v": "1.0"}), ("a", 1, "A", {"v": "2.0"}), ("a", 2, "B", {"v": "2.0"}),
              ("b", 0, "A", {"v": "2.0"})]  # fmt: skip
    with workspace(tmp_path, stream) as ws:
        end = T0 + timedelta(days=30)
        first = ws.funnel(["A", "B"], by="app_version", end=end)["breakdown"]
        assert {k: [s["people"] for s in v] for k, v in first.items()} == {
            "1.0": [1, 1], "2.0": [1, 0]}  # fmt: skip
        at_step = ws.funnel(["A", "B"], by="properties.v", by_step=2, end=end)["breakdown"]
        assert {k: [s["people"] for s in v] for k, v in at_step.items()} == {
            "2.0": [1, 1], "(none)": [1, 0]}  # fmt: skip
        frame = ws.funnel(["A", "B"], by="app_version", end=end).to_pandas()
        assert set(frame["breakdown"]) == {"1.0", "2.0"} and len(frame) == 4


def test_journey_map_edges_times_and_loops(tmp_path: Path) -> None:
    stream = [("a", 0, "Open"), ("a", 1, "Fail"), ("a", 2, "Fail"), ("a", 12, "Call Started"),
              ("b", 0, "Open"), ("b", 3, "Fail"), ("b", 33, "Call Started"), ("c", 0, "Open")]
    with workspace(tmp_path, stream) as ws:
        journeys = ws.journeys()
        edges = {(e["from"], e["to"]): e for e in journeys["edges"]}
        assert set(edges) == {("Open", "Fail"), ("Fail", "Fail"), ("Fail", "Call Started")}
        handoff = edges[("Fail", "Call Started")]
        assert (handoff["from_channel"], handoff["to_channel"]) == ("mobile", "call_center")
        assert handoff["people"] == 2 and handoff["transitions"] == 2
        assert handoff["median_seconds"] == 1200 and handoff["p90_seconds"] == pytest.approx(1680)
        assert edges[("Fail", "Fail")]["people"] == 1  # the retry loop is kept
        assert journeys["starts"] == [{"event": "Open", "channel": "mobile", "people": 3}]
        assert {e["event"]: e["people"] for e in journeys["ends"]} == {"Call Started": 2,
                                                                        "Open": 1}  # fmt: skip
        assert [e["people"] for e in ws.journeys(min_people=2)["edges"]] == [2, 2]
        after_fail = ws.journeys(from_event="Fail")
        assert ("Open", "Fail") not in {(e["from"], e["to"]) for e in after_fail["edges"]}


def test_bad_definitions_name_the_problem(tmp_path: Path) -> None:
    with workspace(tmp_path, [("a", 0, "A")]) as ws:
        with pytest.raises(BadRequest, match="at least two steps"):
            ws.funnel(["A"])
        with pytest.raises(BadRequest, match="not a duration"):
            ws.funnel(["A", "B"], within="7 days")
        with pytest.raises(BadRequest, match="Did you mean 'app_version'"):
            ws.funnel(["A", "B"], by="app_versoin")


def test_cli_api_and_python_give_the_same_answer(tmp_path: Path) -> None:
    import httpx

    from tests.conftest import Server

    stream = [("a", 0, "A", {"v": "1.0"}), ("a", 3, "B"), ("b", 0, "A", {"v": "2.0"}),
              ("b", 40, "Call Started"), ("c", 1, "A", {"v": "2.0"})]  # fmt: skip
    end = (T0 + timedelta(days=30)).isoformat()
    with workspace(tmp_path, stream) as ws:
        python = ws.funnel(["A", "B"], by="app_version", end=T0 + timedelta(days=30)).to_dict()
        python_journeys = ws.journeys().to_dict()
    server = Server(tmp_path / "ws").start()
    try:
        cli = server.cli("funnel", "A", "B", "--by", "app_version", "--to", end)
        token = server.cli("tokens", "add", "reader", "--scope", "read")["token"]
        api = httpx.get(server.url + "/api/funnel", headers={"Authorization": f"Bearer {token}"},
                        params={"steps": ["A", "B"], "by": "app_version", "end": end}).json()
        journeys = server.cli("journeys")
    finally:
        server.stop()
    assert cli == api == python
    assert [s["people"] for s in cli["steps"]] == [3, 1]
    assert set(cli["breakdown"]) == {"1.0", "2.0"}
    assert journeys == python_journeys
    assert {"from", "to", "from_channel", "to_channel", "people", "transitions",
            "median_seconds", "p90_seconds"} <= set(journeys["edges"][0])  # fmt: skip
