"""Ingest bodies parsed in worker processes (seamline.collect.parsing).

- What a worker hands back (normalised before the source is known, then filled in, and
  encoded across the process boundary) is exactly what normalising with the source gives.
- A parse worker killed under load costs only retryable 503s: every acknowledged event is
  stored once, and the server keeps answering with new workers.
- Workers do not outlive a server killed with SIGKILL, and run below its priority.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seamline.collect.parsing import _decode_answer, _encode_answer
from seamline.events import normalise_events, parse_request
from seamline.events.bodies import ParseJob, assign_source, parse_body
from seamline.events.keys import key_digests
from tests.conftest import Server
from tests.loadgen import Sender, read_store
from tests.test_events import RECEIVED, _comparable, ctx, wire_events


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _workers(pid: int) -> list[int]:
    """The parse workers among a server's children (not multiprocessing's tracker)."""
    return [child for child in _children(pid)
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(wire_events(), min_size=1, max_size=4), st.booleans(),
       st.sampled_from([None, "track"]), st.sampled_from([None, "retail"]))  # fmt: skip
def test_worker_result_equals_normalising_with_the_source(
    events: list[dict[str, object]], fill_ip: bool, forced: str | None, unit: str | None
) -> None:
    body = json.dumps({"batch": events, "sentAt": "2026-11-23T11:59:30Z",
                       "writeKey": "sl_wk_x"}).encode()  # fmt: skip
    job = ParseJob(body, True, forced, RECEIVED, max_events=2500, max_event_bytes=34_000,
                   skew_flag_seconds=600, client_ip="203.0.113.9", fill_ip=fill_ip)  # fmt: skip
    # across the process boundary, as a worker's result travels: marshalled when every
    # event passed, pickled when some failed
    original = parse_body(job)
    payload = _encode_answer((True, original))
    assert payload[:1] == (b"P" if original.failed else b"M")
    ok, parsed = _decode_answer(payload)
    assert ok and parsed.rows.columns == original.rows.columns
    assign_source(parsed, "src_1", "mobile", unit)
    assert parsed.key_digests is None  # the source was not known when it was parsed
    # a source named by the Authorization header: the keys' fingerprints come along
    _, keyed = _decode_answer(_encode_answer(
        (True, parse_body(dataclasses.replace(job, source_id="src_1")))))  # fmt: skip
    assert keyed.keys_source == "src_1" and keyed.key_digests == key_digests(
        "src_1", keyed.rows.columns["message_id"])  # (a missing messageId is made up anew)

    request = parse_request(body, batch=True, max_events=2500, max_event_bytes=34_000)
    context = ctx(unit=unit, client_ip="203.0.113.9", fill_ip=fill_ip)
    rows, failed = normalise_events(request.events, context, forced_type=forced,
                                    batch_sent_at=request.sent_at)  # fmt: skip
    assert parsed.write_key == "sl_wk_x" and parsed.events == len(events)
    assert _comparable(parsed.rows) == _comparable(rows)
    assert [(f.source_id, f.reason, f.field, f.message) for f in parsed.failed] == [
        (f.source_id, f.reason, f.field, f.message) for f in failed
    ]


def test_a_killed_parse_worker_costs_only_retries_and_the_server_recovers(
    tmp_path: Path,
) -> None:
    data = tmp_path / "workspace"
    server = Server(data, env={"SEAMLINE_PARSE_PROCESSES": "2"}).start()
    write_key = server.add_source("app")
    assert server.proc is not None
    sender = Sender(server.url, write_key, threads=4, batch_size=50).start()
    killed = 0
    deadline = time.monotonic() + 30
    while killed < 3 and time.monotonic() < deadline:
        time.sleep(1.0)
        workers = _workers(server.proc.pid)
        if workers:  # started on the first body; replaced after each kill
            os.kill(workers[0], signal.SIGKILL)
            killed += 1
    time.sleep(1)
    sender.stop()
    stats = sender.stats
    assert killed == 3, "the parse workers were not (re)started"
    assert not stats.unexpected, stats.unexpected[:3]
    assert set(stats.statuses) <= {"200", "503"}, stats.statuses
    # after the kills, the server answers with fresh workers
    with httpx.Client(auth=(write_key, "")) as client:
        answer = client.post(server.url + "/v1/batch", json={"batch": [
            {"type": "track", "event": "After", "userId": "u", "messageId": "after-1"}]})
    assert answer.status_code == 200, answer.text
    code = server.stop()
    assert code in (0, -signal.SIGTERM), f"exit status {code}:\n{server.log()[-3000:]}"
    assert "a parse worker died" in server.log()
    stored = read_store(data)
    assert stats.acked_ids and stats.acked_ids | {"after-1"} <= stored.ids
    assert stored.rows == stored.distinct_ids  # nothing stored twice
    assert not stored.partial_batches({**stats.batch_sizes, "after": 1})


def test_parse_workers_exit_with_a_killed_server(tmp_path: Path) -> None:
    server = Server(tmp_path / "workspace").start()
    write_key = server.add_source("app")
    assert server.proc is not None
    pid = server.proc.pid
    with httpx.Client(auth=(write_key, "")) as client:
        answer = client.post(server.url + "/v1/batch", json={"batch": [
            {"type": "track", "event": "A", "userId": "u", "messageId": "m-1"}]})
    assert answer.status_code == 200
    workers = _workers(pid)
    try:
        assert workers, "the body was not parsed in a worker process"
        # the workers yield the cores to the server's writer (SEAMLINE_PARSE_NICE, 10 by
        # default); the second may still be starting, before it lowers its priority
        wanted = {min(19, os.getpriority(os.PRIO_PROCESS, pid) + 10)}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and {
                os.getpriority(os.PRIO_PROCESS, w) for w in workers} != wanted:  # fmt: skip
            time.sleep(0.05)
        assert {os.getpriority(os.PRIO_PROCESS, w) for w in workers} == wanted
    finally:
        server.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.1)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()
             and " Z " not in Path(f"/proc/{w}/stat").read_text()]  # fmt: skip
    assert not alive, f"parse workers {alive} outlived the killed server"
