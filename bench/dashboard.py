"""Dashboard benchmark: first-view and warm render time of each page on the demo workspace.

Builds ``seamline demo --no-serve --people N`` in a temporary directory, starts a real
``seamline serve``, signs in with the read token the demo prints (through the sign-in
form, as a browser does) and requests each page with httpx: first the **first view** after
the server started (cold caches, lazy imports), then ``--repeat`` warm views. For each it
records the wall time of the request on localhost and the server's own time from the
``Server-Timing: app;dur=`` header (query + render, without the network).

    .venv/bin/python bench/dashboard.py --people 2000 --repeat 5
    .venv/bin/python bench/dashboard.py --people 20000 --workspace /tmp/demo-20k  # kept, reused
    SEAMLINE_PRECOMPUTE_SECONDS=0 .venv/bin/python bench/dashboard.py ...  # no precompute

The server precomputes the overview's and the default views' analyses when it starts and
after commits (README: "Speed"); ``--settle S`` waits S seconds after start-up before the
first view, as a user arriving a little later would. With no settle (the default) the first
views race the start-up precompute, and share its computations when they overlap.

Results go to stdout and to ``bench/results/dashboard-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
FUNNEL = "steps=App+Opened&steps=Card+Activation+Started&steps=Card+Activation+Completed&within=1d"


def pages(person: str) -> list[tuple[str, str]]:
    return [
        ("overview", "/"),
        ("journeys", "/journeys"),
        ("journeys by unit, top 100", "/journeys?lane=unit&top=100"),
        ("funnel form (no steps)", "/funnel"),
        ("funnel, 3 steps", f"/funnel?{FUNNEL}"),
        ("funnel, 3 steps by app_version", f"/funnel?{FUNNEL}&by=app_version"),
        ("seams", "/seams"),
        ("paths after App Opened, 3 steps", "/paths?event=App+Opened&steps=3"),
        ("retention by week", "/retention"),
        ("person", f"/person?id={person}"),
        ("live", "/live"),
        ("sources", "/sources"),
    ]


def seamline(data: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "seamline", "--data", str(data), "--json", *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_ms(response: httpx.Response) -> float:
    found = re.search(r"dur=([0-9.]+)", response.headers.get("server-timing", ""))
    return float(found.group(1)) if found else float("nan")


def sign_in(client: httpx.Client, token: str) -> None:
    form = client.get("/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf, "no sign-in form"
    answer = client.post("/sign-in", data={"csrf": csrf.group(1), "token": token})
    assert answer.status_code == 303, answer.text


def measure(client: httpx.Client, path: str) -> tuple[float, float, int]:
    started = time.perf_counter()
    response = client.get(path)
    wall = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
    return wall, server_ms(response), len(response.content)


def run(data: Path, people: int, repeat: int, settle: float = 0.0) -> dict[str, Any]:
    started = time.perf_counter()
    if (data / "bench-demo.json").exists():  # --workspace: a demo built by an earlier run
        built = json.loads((data / "bench-demo.json").read_text())
        build_seconds = float("nan")
    else:
        built = seamline(data, "demo", "--no-serve", "--people", str(people))
        build_seconds = time.perf_counter() - started
        (data / "bench-demo.json").write_text(json.dumps(built))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "seamline", "--data", str(data), "serve", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        time.sleep(settle)  # let the server's start-up precompute finish (see --settle)
        with httpx.Client(base_url=base, timeout=120) as client:
            sign_in(client, built["read_token"])
            person = _a_person(base, built["read_token"])
            rows = []
            for name, path in pages(person):
                cold = measure(client, path)
                warm = [measure(client, path) for _ in range(repeat)]
                rows.append(
                    {
                        "page": name,
                        "path": path,
                        "bytes": cold[2],
                        "first_wall_ms": round(cold[0], 1),
                        "first_server_ms": round(cold[1], 1),
                        "warm_wall_ms": round(statistics.median(w[0] for w in warm), 1),
                        "warm_server_ms": round(statistics.median(w[1] for w in warm), 1),
                    }
                )
            plotly = measure(client, "/static/plotly.min.js")
        stats = httpx.get(
            base + "/api/stats", headers={"Authorization": f"Bearer {built['read_token']}"}
        ).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "people": people,
        "events": stats["events"],
        "persons": stats["persons"],
        "demo_build_seconds": round(build_seconds, 1),
        "repeat": repeat,
        "settle_seconds": settle,
        "precompute_seconds": os.environ.get("SEAMLINE_PRECOMPUTE_SECONDS", "default"),
        "plotly_js": {"bytes": plotly[2], "wall_ms": round(plotly[0], 1)},
        "pages": rows,
    }


def _a_person(base: str, token: str) -> str:
    """A person id behind the top seam (as the seams page links them), else any user id."""
    headers = {"Authorization": f"Bearer {token}"}
    seams = httpx.get(base + "/api/seams", headers=headers, timeout=120).json()["seams"]
    for seam in seams:
        if seam.get("people_examples"):
            return str(seam["people_examples"][0])
    return "cus_00000000"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=2000, help="demo customers (default 2000)")
    parser.add_argument("--repeat", type=int, default=5, help="warm views per page (median)")
    parser.add_argument("--workspace", type=Path, default=None,
                        help="keep the demo workspace in this directory and reuse it next time "
                        "(default: a temporary one, built every run)")  # fmt: skip
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait after the server is up before the first view "
                        "(lets its start-up precompute finish; default 0)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.workspace is not None:
        args.workspace.mkdir(parents=True, exist_ok=True)
        result = run(args.workspace.resolve(), args.people, args.repeat, args.settle)
    else:
        with tempfile.TemporaryDirectory(prefix="seamline-bench-") as tmp:
            result = run(Path(tmp) / "workspace", args.people, args.repeat, args.settle)
    print(
        f"demo: {result['people']:,} people, {result['events']:,} events, "
        f"{result['persons']:,} persons (built in {result['demo_build_seconds']} s)"
    )
    print(
        f"{'page':34} {'first wall':>10} {'first app':>10} {'warm wall':>10} "
        f"{'warm app':>9} {'HTML':>9}"
    )
    for row in result["pages"]:
        print(
            f"{row['page']:34} {row['first_wall_ms']:>8.0f}ms {row['first_server_ms']:>8.0f}ms "
            f"{row['warm_wall_ms']:>8.0f}ms {row['warm_server_ms']:>7.0f}ms "
            f"{row['bytes'] / 1024:>7.0f}KB"
        )
    print(
        f"plotly.min.js: {result['plotly_js']['bytes'] / 1e6:.1f} MB in "
        f"{result['plotly_js']['wall_ms']:.0f} ms (cached by browsers for a day)"
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"dashboard-{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
