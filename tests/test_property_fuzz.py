"""Property-based and coverage-guided fuzzing (reliability-and-security.md §5, §6.5).

1. **atheris** runs :func:`tests.fuzz_events.target` (request parser + per-event rules,
   instrumented) for ``SEAMLINE_ATHERIS_SECONDS`` (default 20). When atheris is not
   installed (no wheel for this platform: see the README) the same target runs under
   hypothesis instead, with more examples; when it is installed but cannot run, the test
   fails and says so.
2. **hypothesis** runs the same target on generated Segment messages and on raw bytes.
3. **hypothesis against the real server**: generated batches (valid, invalid and
   malformed events, some request-level garbage) are posted to ``seamline serve``; every
   answer is 200 or 400, and sent = stored + failed + rejected, exactly.

Figures go to stdout and ``tests/artifacts/property_fuzz.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ARTIFACTS, Server
from tests.fuzz_events import DICTIONARY, FORCED, SEEDS, target

ATHERIS_SECONDS = int(os.environ.get("SEAMLINE_ATHERIS_SECONDS", "20"))
TARGET_EXAMPLES = int(os.environ.get("SEAMLINE_TARGET_EXAMPLES", "1500"))
SERVER_EXAMPLES = int(os.environ.get("SEAMLINE_SERVER_EXAMPLES", "150"))
FIGURES: dict[str, Any] = {}


def _record(name: str, value: Any) -> None:
    FIGURES[name] = value
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "property_fuzz.json").write_text(json.dumps(FIGURES, indent=2) + "\n")
    print(f"property fuzz {name}:", json.dumps(value))


# -- strategies: Segment messages, good and bad -------------------------------------------
TEXT = st.text(max_size=30) | st.sampled_from(
    ["", " ", "null", "undefined", "0", "\u0000", "\U0001f600", "\u202e", "x" * 200,
     "\ud83d\ude00", "\u05e9\u05dc\u05d5\u05dd", "a\u200db"]
)  # fmt: skip
SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
JSONISH = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
TIMES = st.sampled_from(
    ["2026-11-23T10:00:00Z", "2026-11-23T10:00:00.123+02:00", "2026-11-23 10:00:00",
     "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "yesterday", "", "2026-02-30T00:00:00Z"]
) | st.integers() | st.none()  # fmt: skip
KINDS = ("track", "identify", "page", "screen", "group", "alias")
IDS = st.text(min_size=1, max_size=20).filter(str.strip) | st.integers(0, 10**6).map(str)
REQUIRED = {"track": "event", "group": "groupId", "alias": "previousId"}


@st.composite
def messages(draw: st.DrawFn) -> Any:
    """Mostly well-formed Segment messages, some with one field broken, some anything."""
    shape = draw(st.integers(0, 9))
    if shape == 9:
        return draw(JSONISH)  # not an event at all, most of the time
    kind = draw(st.sampled_from(KINDS))
    event: dict[str, Any] = {"type": kind, "userId": draw(IDS)}
    if kind in REQUIRED:
        event[REQUIRED[kind]] = draw(IDS)
    if kind in ("page", "screen"):
        event["name"] = draw(TEXT)
    optional = {
        "anonymousId": IDS,
        "timestamp": TIMES,
        "sentAt": TIMES,
        "properties": st.dictionaries(TEXT, JSONISH, max_size=5),
        "traits": st.fixed_dictionaries({}, optional={"email": TEXT, "phone": TEXT}),
        "context": st.fixed_dictionaries({}, optional={
            "device": st.fixed_dictionaries({}, optional={"id": IDS}),
            "traits": st.fixed_dictionaries({}, optional={"email": TEXT}),
            "ignoreSentAt": st.booleans(), "ip": TEXT,
        }),
    }  # fmt: skip
    for name, strategy in optional.items():
        if draw(st.integers(0, 3)) == 0:
            event[name] = draw(strategy)
    if shape >= 7:  # break one field: wrong type, blank, or removed
        name = draw(st.sampled_from([*event, "type", "userId", "properties", "context"]))
        if draw(st.booleans()):
            event.pop(name, None)
            if name == "userId":
                event.pop("anonymousId", None)
        else:
            event[name] = draw(JSONISH)
    return event


def encode(value: Any) -> bytes:
    """JSON with ``\\uXXXX`` escapes, as the SDKs send it."""
    return json.dumps(value).encode()


def corrupt(body: bytes, how: str) -> bytes:
    """Request-level damage: the whole request must be refused (400), nothing stored."""
    if how == "truncate":
        return body[: len(body) // 2]
    if how == "surrogate":  # a lone UTF-16 surrogate escape: DuckDB could not store it
        return body.replace(b'"type"', b'"\\ud800type"', 1)
    if how == "nan":
        return body.replace(b'"batch": [', b'"batch": [NaN, ', 1)
    return body


CORRUPTION = st.sampled_from(["none"] * 7 + ["truncate", "surrogate", "nan"])
BODIES = st.one_of(
    st.builds(lambda batch, sent, how: corrupt(encode({"batch": batch, "sentAt": sent}), how),
              st.lists(messages(), max_size=8), TIMES, CORRUPTION),
    st.builds(encode, messages()),
    st.builds(encode, JSONISH),
    st.binary(max_size=300),
)  # fmt: skip


# -- 1. atheris ------------------------------------------------------------------------------
def test_atheris_fuzzes_the_parser_and_rules(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        _record("atheris", {"ran": False, "reason": "atheris is not installed for "
                            f"Python {sys.version.split()[0]} on this platform; the same "
                            "target ran under hypothesis (below) instead"})  # fmt: skip
        _run_target_under_hypothesis(TARGET_EXAMPLES * 3)
        return
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for number, seed in enumerate(SEEDS):
        for mode in range(len(FORCED) * 2):
            (corpus / f"seed-{number}-{mode}").write_bytes(bytes([mode]) + seed)
    dictionary = tmp_path / "events.dict"
    dictionary.write_text("".join(f"kw{n}={json.dumps(t)}\n" for n, t in enumerate(DICTIONARY)))
    script = Path(__file__).with_name("fuzz_events.py")
    command = [sys.executable, str(script), f"-max_total_time={ATHERIS_SECONDS}",
               f"-dict={dictionary}", f"-artifact_prefix={tmp_path}/finding-",
               "-max_len=4096", "-print_final_stats=1", str(corpus)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=ATHERIS_SECONDS + 120)
    output = done.stdout + done.stderr
    findings = sorted(tmp_path.glob("finding-*"))
    if done.returncode != 0 or findings:
        detail = ""
        if findings:
            detail = f"\ninput {findings[0].name}: {findings[0].read_bytes()[:500]!r}"
        if "Traceback" not in output and not findings:
            pytest.fail(f"atheris is installed but could not run (exit {done.returncode}):\n"
                        f"{output[-3000:]}")  # fmt: skip
        pytest.fail(f"atheris found an input that breaks the target:{detail}\n{output[-4000:]}")
    runs = re.search(r"Done (\d+) runs in (\d+) second", output)
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", output)
    assert runs, output[-2000:]
    _record("atheris", {
        "ran": True, "seconds": int(runs.group(2)), "runs": int(runs.group(1)),
        "edges_covered": int(coverage[-1][0]) if coverage else None,
        "features": int(coverage[-1][1]) if coverage else None,
        "corpus_seeds": len(SEEDS) * len(FORCED) * 2, "findings": 0,
    })  # fmt: skip
    assert int(runs.group(1)) > 1000, "atheris ran too few inputs to mean anything"


# -- 2. the same target under hypothesis -------------------------------------------------------
def _run_target_under_hypothesis(examples: int) -> dict[str, int]:
    totals: Counter[str] = Counter()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(mode=st.integers(0, 255), body=BODIES)
    def run(mode: int, body: bytes) -> None:
        events, rows, failed = target(bytes([mode]) + body)
        totals["inputs"] += 1
        totals["events"] += events
        totals["rows"] += rows
        totals["failed"] += failed
        totals["rejected_requests"] += events == 0

    run()
    return dict(totals)


def test_hypothesis_runs_the_same_target() -> None:
    totals = _run_target_under_hypothesis(TARGET_EXAMPLES)
    _record("hypothesis_target", totals)
    assert totals["events"] == totals["rows"] + totals["failed"]
    assert totals["rows"] > 0 and totals["failed"] > 0


# -- 3. generated batches against the real server ---------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    server = Server(tmp_path_factory.mktemp("property") / "workspace").start()
    try:
        yield server, server.add_source("property-app", "web"), server.admin_token()
    finally:
        if server.proc is not None:
            server.stop()


def test_generated_batches_against_the_server_conserve_events(
    live: tuple[Server, str, str],
) -> None:
    server, key, token = live
    api = {"Authorization": f"Bearer {token}"}
    tally: Counter[str] = Counter()
    counter = iter(range(10**9))

    def totals() -> tuple[int, int]:
        stats = httpx.get(server.url + "/api/stats", headers=api, timeout=30).json()
        return stats["events"], stats["failed_events"]

    before = totals()
    with httpx.Client(base_url=server.url, auth=(key, ""), timeout=60) as client:

        @settings(max_examples=SERVER_EXAMPLES, deadline=None, database=None,
                  derandomize=True, suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(batch=st.lists(messages(), max_size=12), how=CORRUPTION, sent_at=TIMES)
        def run(batch: list[Any], how: str, sent_at: Any) -> None:
            for event in batch:  # unique ids: dedup must not hide a lost event
                if isinstance(event, dict) and "messageId" not in event:
                    event["messageId"] = f"p-{next(counter)}"
            body = corrupt(encode({"batch": batch, "sentAt": sent_at}), how)
            if how != "none" and body == encode({"batch": batch, "sentAt": sent_at}):
                how = "none"  # nothing to damage (an empty batch, say)
            response = client.post("/v1/batch", content=body)
            tally[str(response.status_code)] += 1
            assert response.status_code in (200, 400), response.text[:300]
            if response.status_code == 200:
                assert response.json() == {"success": True}
                tally["events_accepted"] += len(batch)
            else:
                body_json = response.json()
                assert set(body_json) == {"code", "message"}, body_json
                tally["events_rejected"] += len(batch)
                tally[f"code:{body_json['code']}"] += 1
            tally["events_sent"] += len(batch)
            if how != "none":
                assert response.status_code == 400, f"{how}: {response.text[:200]}"

        run()
    after = totals()
    stored, failed = after[0] - before[0], after[1] - before[1]
    figures = {**dict(tally), "stored": stored, "failed": failed,
               "examples": SERVER_EXAMPLES}  # fmt: skip
    _record("server_batches", figures)
    assert server.proc is not None and server.proc.poll() is None
    assert "Traceback" not in server.log(), server.log()[-3000:]
    assert tally["events_accepted"] == stored + failed, figures
    assert tally["events_sent"] == stored + failed + tally["events_rejected"], figures
