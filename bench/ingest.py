"""Ingest benchmark: durable events/s through a real ``seamline serve`` process.

Starts ``python -m seamline --data <tmpdir> serve``, creates a source through the
running server, then POSTs analytics-swift-like 100-event batches to ``/v1/b`` from
concurrent keep-alive connections for a fixed time. Only events of requests answered
``200`` count (a 200 is sent after the group COMMIT). The server is stopped with
SIGTERM and the DuckDB file is opened to check that it holds exactly the acknowledged
events. The same bodies are then decoded and validated in-process with seamline's own
``parse_body`` (what a parse worker runs) on one core: the parse-only ceiling.

    .venv/bin/python bench/ingest.py --seconds 20

Results go to stdout and to ``bench/results/ingest-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PATH = "/v1/b"  # analytics-swift posts batches to <apiHost>/b with apiHost "api.segment.io/v1"
PLACEHOLDER = b"@@MID@@"
TEMPLATES = 64  # distinct batch bodies (users, events, properties); messageIds vary per request

# -- realistic analytics-swift events --------------------------------------------------------

_SCREENS = ["Home", "Search", "Product", "Cart", "Checkout", "Account", "Orders", "Settings"]
_TRACKS = {
    "Product Viewed": lambda r: {
        "product_id": f"sku-{r.randrange(10_000):05d}",
        "price": round(r.uniform(2, 400), 2),
        "currency": "EUR",
        "category": r.choice(["shoes", "bags", "shirts", "jackets"]),
    },
    "Product Added": lambda r: {
        "product_id": f"sku-{r.randrange(10_000):05d}",
        "quantity": r.randint(1, 3),
        "price": round(r.uniform(2, 400), 2),
    },
    "Products Searched": lambda r: {"query": r.choice(["sneakers", "red dress", "rain coat"])},
    "Checkout Started": lambda r: {
        "order_id": uuid.UUID(int=r.getrandbits(128)).hex[:16],
        "value": round(r.uniform(10, 900), 2),
        "currency": "EUR",
        "coupon": None,
    },
    "Push Notification Tapped": lambda r: {"campaign": f"cmp-{r.randrange(50)}", "action": "open"},
}
_DEVICES = [
    ("iPhone15,2", "iOS", "17.5.1", 1179, 2556),
    ("iPhone14,5", "iOS", "17.4", 1170, 2532),
    ("iPhone16,1", "iOS", "18.1", 1179, 2556),
    ("iPad13,18", "iPadOS", "17.5", 1640, 2360),
]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _user(r: random.Random) -> dict[str, Any]:
    model, os_name, os_version, width, height = r.choice(_DEVICES)
    return {
        "anonymousId": str(uuid.UUID(int=r.getrandbits(128))).upper(),
        "userId": f"user-{r.randrange(1_000_000)}" if r.random() < 0.6 else None,
        "context": {
            "app": {
                "name": "Shopper",
                "version": r.choice(["4.12.0", "4.12.1", "4.13.0"]),
                "build": str(r.randint(900, 990)),
                "namespace": "com.example.shopper",
            },
            "device": {
                "id": str(uuid.UUID(int=r.getrandbits(128))).upper(),
                "manufacturer": "Apple",
                "model": model,
                "name": "iPhone" if os_name == "iOS" else "iPad",
                "type": "ios",
            },
            "library": {"name": "analytics-swift", "version": "1.5.11"},
            "locale": r.choice(["en-GB", "fr-FR", "de-DE", "nl-NL"]),
            "network": {"bluetooth": False, "cellular": r.random() < 0.3, "wifi": True},
            "os": {"name": os_name, "version": os_version},
            "screen": {"width": width, "height": height},
            "timezone": r.choice(["Europe/London", "Europe/Paris", "Europe/Berlin"]),
            "instanceId": str(uuid.UUID(int=r.getrandbits(128))).upper(),
        },
    }


def _event(r: random.Random, user: dict[str, Any], index: int, moment: datetime) -> dict[str, Any]:
    roll = r.random()
    base: dict[str, Any] = {
        "anonymousId": user["anonymousId"],
        "messageId": PLACEHOLDER.decode() + f"-{index:03d}",
        "timestamp": _iso(moment),
        "context": user["context"],
        "integrations": {},
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
    }
    if user["userId"]:
        base["userId"] = user["userId"]
    if roll < 0.70:
        name = r.choice(list(_TRACKS))
        base.update(type="track", event=name, properties=_TRACKS[name](r))
    elif roll < 0.95:
        screen = r.choice(_SCREENS)
        base.update(type="screen", name=screen, properties={"name": screen, "from": "tab_bar"})
    else:
        base.update(
            type="identify",
            traits={"email": f"{user['userId'] or 'anon'}@example.com", "plan": "free"},
        )
    return base


def build_templates(write_key: str, batch_size: int, seed: int) -> list[list[bytes]]:
    """Batch bodies split at the messageId placeholder: ``prefix.join(parts)`` is a body."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    templates = []
    for _ in range(TEMPLATES):
        users = [_user(rng) for _ in range(rng.randint(3, 8))]
        start = now - timedelta(seconds=rng.uniform(1, 30))
        events = [
            _event(rng, rng.choice(users), i, start + timedelta(milliseconds=150 * i))
            for i in range(batch_size)
        ]
        body = {"batch": events, "sentAt": _iso(now), "writeKey": write_key}
        encoded = json.dumps(body, separators=(",", ":")).encode()
        templates.append(encoded.split(PLACEHOLDER))
    return templates


# -- load generator: processes x threads, one keep-alive socket per client -------------------


@dataclass
class ClientResult:
    requests: int = 0
    acked_events: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    bytes_sent: int = 0
    latencies: bytes = b""  # array('d') of seconds, 200 answers only
    cpu_seconds: float = 0.0
    first_send: float = 0.0
    last_answer: float = 0.0


class _Conn:
    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = sock, b""
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def exchange(self, request: bytes) -> int:
        """Send one request, read one response; return the status code."""
        sock = self.sock or self.connect()
        sock.sendall(request)
        buf = self.buf
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            rest += chunk
        self.buf = rest[length:]
        if close:
            self.close()
        return status


def request_head(port: int, write_key: str) -> bytes:
    """The head of an analytics-swift-like batch request, up to the Content-Length value."""
    auth = base64.b64encode(f"{write_key}:".encode()).decode()
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "User-Agent: analytics-swift/1.5.11 (bench)\r\n"
        f"Authorization: Basic {auth}\r\nContent-Type: application/json\r\n"
        "Accept: */*\r\nContent-Length: "
    ).encode()


def client_thread(
    port: int,
    head: bytes,
    templates: list[list[bytes]],
    tag: str,
    batch_size: int,
    start_at: float,
    stop_at: float,
    out: ClientResult,
    gap: float = 0.0,
    acked_at: array[float] | None = None,
) -> None:
    """One keep-alive connection sending batches until ``stop_at``: back to back, or one
    every ``gap`` seconds (catching up at once when an answer came late, so the offered
    rate holds while the server keeps up). ``acked_at`` collects the times of the 200s."""
    lat = array("d")
    conn = _Conn(port)
    conn.connect()
    seq = 0
    order = list(range(len(templates)))
    random.Random(tag).shuffle(order)
    while time.monotonic() < start_at:
        time.sleep(0.001)
    out.first_send = time.monotonic()
    next_at = start_at
    while True:
        now = time.monotonic()
        if now >= stop_at:
            break
        if gap:
            if next_at > now:
                time.sleep(next_at - now)
                now = time.monotonic()
            next_at += gap
        parts = templates[order[seq % len(order)]]
        body = f"{tag}-{seq:09d}".encode().join(parts)
        request = head + str(len(body)).encode() + b"\r\n\r\n" + body
        seq += 1
        try:
            status = conn.exchange(request)
        except OSError:
            out.errors += 1
            conn.close()
            continue
        done = time.monotonic()
        out.requests += 1
        out.bytes_sent += len(request)
        key = str(status)
        out.statuses[key] = out.statuses.get(key, 0) + 1
        if status == 200:
            out.acked_events += batch_size
            lat.append(done - now)
            if acked_at is not None:
                acked_at.append(done)
        elif status == 503:
            time.sleep(0.05)  # an SDK would back off; do not spin on a full queue
        out.last_answer = done
    conn.close()
    out.latencies = lat.tobytes()


def _worker(
    index: int,
    threads: int,
    port: int,
    write_key: str,
    templates: list[list[bytes]],
    batch_size: int,
    run_id: str,
    start_at: float,
    stop_at: float,
    queue: Any,
) -> None:
    import threading

    head = request_head(port, write_key)
    results = [ClientResult() for _ in range(threads)]
    cpu0 = time.process_time()
    pool = [
        threading.Thread(
            target=client_thread,
            args=(
                port,
                head,
                templates,
                f"{run_id}-{index:02d}{t:02d}",
                batch_size,
                start_at,
                stop_at,
                results[t],
            ),
        )
        for t in range(threads)
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    process_cpu = time.process_time() - cpu0
    for result in results:
        result.cpu_seconds = process_cpu / threads
    queue.put([asdict(r) for r in results])


def run_load(
    port: int, write_key: str, templates: list[list[bytes]], args: argparse.Namespace
) -> list[ClientResult]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    run_id = uuid.uuid4().hex[:8]
    procs = max(1, min(args.procs, args.clients))
    shares = [args.clients // procs + (1 if i < args.clients % procs else 0) for i in range(procs)]
    start_at = time.monotonic() + 1.5 + 0.5 * procs  # spawn + connect before the clock starts
    stop_at = start_at + args.seconds
    workers = [
        ctx.Process(
            target=_worker,
            args=(
                i,
                shares[i],
                port,
                write_key,
                templates,
                args.batch_size,
                run_id,
                start_at,
                stop_at,
                queue,
            ),
        )
        for i in range(procs)
    ]
    for worker in workers:
        worker.start()
    results: list[ClientResult] = []
    for _ in workers:
        results.extend(ClientResult(**r) for r in queue.get(timeout=args.seconds + 120))
    for worker in workers:
        worker.join()
    return results


# -- server process ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 2) -> tuple[int, bytes]:
    conn = _Conn(port)
    try:
        conn.connect().settimeout(timeout)
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        assert conn.sock is not None
        conn.sock.sendall(request.encode())
        data = b""
        while chunk := conn.sock.recv(65536):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body
    finally:
        conn.close()


# Runs the real CLI with experiment hooks, seamline itself unchanged: --server-exec runs Python
# code first; --duckdb-set runs SET statements on every DuckDB connection the server opens.
_BOOT = """
import json, sys
import duckdb
hooks = json.loads(sys.argv[1])
exec(hooks["server_exec"])
_connect = duckdb.connect
def connect(*args, **kwargs):
    con = _connect(*args, **kwargs)
    for statement in hooks["duckdb_set"]:
        con.execute(statement)
    return con
duckdb.connect = connect
sys.argv = ["seamline", *sys.argv[2:]]
from seamline.cli import main
main()
"""


class ServerProcess:
    def __init__(self, data: Path, port: int, env: dict[str, str], hooks: dict[str, Any]):
        self.data, self.port = data, port
        self.hooks = hooks
        self.log_path = data.parent / "serve.log"
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.hwm_kb = 0

    def start(self, timeout: float = 60) -> None:
        with self.log_path.open("ab") as log:
            launcher = ["-m", "seamline"]
            if any(self.hooks.values()):
                launcher = ["-c", _BOOT, json.dumps(self.hooks)]
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    *launcher,
                    "--data",
                    str(self.data),
                    "serve",
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_tail()}")
            try:
                if http_get(self.port, "/api/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds of (the server process, its live children: the parse workers)."""
        assert self.proc is not None
        own = _process_cpu(self.proc.pid)
        children = 0.0
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.proc.pid:
                    children += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return own, children

    def read_hwm(self) -> int:
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.hwm_kb = max(self.hwm_kb, int(line.split()[1]))
        except OSError:
            pass
        return self.hwm_kb

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.read_hwm()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"server ignored SIGTERM for {timeout}s") from None


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU seconds all processes of the machine spent busy since boot (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def git_revision() -> str | None:
    """Commit of the code under test, with "+dirty" when seamline/ has local changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "seamline"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def wait_for_idle(limit: float, threshold: float = 0.3) -> float:
    """Wait (up to ``limit`` s) until the machine's other load is under ``threshold`` cores."""
    deadline = time.monotonic() + limit
    while True:
        busy0 = busy_cpu_seconds()
        time.sleep(2)
        cores = (busy_cpu_seconds() - busy0) / 2
        if cores < threshold or time.monotonic() >= deadline:
            return cores


def add_source(data: Path) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "seamline",
            "--data",
            str(data),
            "--json",
            "sources",
            "add",
            "bench",
            "--channel",
            "mobile",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"sources add failed: {result.stderr}")
    return str(json.loads(result.stdout)["write_key"])


def writer_profile(data: Path) -> dict[str, Any] | None:
    """The running server's writer phases (``stats()["writer"]``), through the CLI."""
    result = subprocess.run(
        [sys.executable, "-m", "seamline", "--data", str(data), "--json", "stats"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    if result.returncode != 0:
        print(f"warning: stats failed: {result.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    profile: dict[str, Any] | None = json.loads(result.stdout).get("writer")
    return profile


# -- parse-only ceiling -----------------------------------------------------------------------


def parse_ceiling(bodies: list[bytes], seconds: float) -> dict[str, float]:
    """Single-core events/s of seamline's own decode + validation of the same bodies
    (``parse_body``, what a parse worker runs)."""
    import pyarrow as pa

    from seamline.events.bodies import ParseJob, parse_body
    from seamline.events.columns import EVENTS_SCHEMA
    from seamline.events.timestamps import utcnow
    from seamline.settings import Settings

    settings = Settings()

    def parse(body: bytes) -> Any:
        # what a parse worker runs for each body
        job = ParseJob(
            body,
            batch=True,
            forced_type=None,
            received_at=utcnow(),
            max_events=settings.max_batch_events,
            max_event_bytes=settings.max_event_bytes,
            skew_flag_seconds=settings.skew_flag_seconds,
            client_ip="127.0.0.1",
            fill_ip=True,
        )
        parsed = parse_body(job)
        assert not parsed.failed, parsed.failed[0]
        return parsed.rows

    def rate(step: Any) -> float:
        events, start = 0, time.perf_counter()
        while True:
            for body in bodies:
                events += step(body)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return events / elapsed

    parse(bodies[0])  # warm up imports and caches
    return {
        "parse_normalise_events_per_s": rate(lambda b: len(parse(b))),
        "parse_normalise_arrow_events_per_s": rate(
            lambda b: pa.Table.from_pydict(parse(b).columns, schema=EVENTS_SCHEMA).num_rows
        ),
    }


# -- main -------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="load duration (default 20)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent connections (64)")
    parser.add_argument(
        "--procs", type=int, default=1, help="client processes the connections are spread over (1)"
    )
    parser.add_argument("--batch-size", type=int, default=100, help="events per request (100)")
    parser.add_argument(
        "--parse-seconds", type=float, default=3, help="duration of the parse-only measurement (3)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="server environment, e.g. SEAMLINE_GROUP_COMMIT_EVENTS=10000",
    )
    parser.add_argument(
        "--duckdb-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="experiment: run SET NAME=VALUE on the server's DuckDB connection, "
        "e.g. wal_autocheckpoint='256MB' (not a seamline setting)",
    )
    parser.add_argument(
        "--server-exec",
        default="",
        metavar="CODE",
        help="experiment: Python run in the server process before seamline starts, "
        "e.g. 'import gc; gc.set_threshold(20000, 50, 100)'",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to this long for other load to drop under 0.3 cores",
    )
    parser.add_argument(
        "--world", type=int, default=0, metavar="EVENTS",
        help="start from a copy of the benchmark world of about EVENTS stored events "
             "(bench/world.py builds and caches it): ingest into a large table",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    parser.add_argument("--label", default="", help="free text stored with the results")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)

    if args.wait_idle:
        print(f"other load before start: {wait_for_idle(args.wait_idle):.2f} cores", flush=True)
    env = dict(item.split("=", 1) for item in args.env)
    settings_env = {k: v for k, v in {**os.environ, **env}.items() if k.startswith("SEAMLINE_")}
    tmp = Path(tempfile.mkdtemp(prefix="seamline-bench-"))
    data = tmp / "workspace"
    hooks = {
        "duckdb_set": [f"SET {statement}" for statement in args.duckdb_set],
        "server_exec": args.server_exec,
    }
    already = 0  # events stored before the load (a copied world)
    if args.world:
        from world import ensure_world

        world, info = ensure_world(args.world)
        shutil.copytree(world / "workspace", data)
        already = int(info["events"])
    server = ServerProcess(data, free_port(), env, hooks)
    print(
        f"workspace {data}"
        + (f" (a copy of the {already:,}-event benchmark world)" if already else "")
        + f"; server settings {settings_env or 'defaults'}"
        + (f"; DuckDB SET {', '.join(args.duckdb_set)}" if args.duckdb_set else "")
        + (f"; server exec {args.server_exec!r}" if args.server_exec else ""),
        flush=True,
    )
    try:
        server.start(timeout=600 if already else 60)  # a world's identity graph loads first
        write_key = add_source(data)
        templates = build_templates(write_key, args.batch_size, seed=7)
        body_bytes = statistics.mean(sum(map(len, t)) for t in templates)
        print(
            f"load: {args.clients} connections in {args.procs} process(es), "
            f"{args.batch_size}-event batches of ~{body_bytes / 1024:.0f} KiB, "
            f"{args.seconds:g} s ...",
            flush=True,
        )
        load_before = os.getloadavg()[0]
        (main0, workers0), busy0, wall0 = server.cpu_seconds(), busy_cpu_seconds(), time.monotonic()
        results = run_load(server.port, write_key, templates, args)
        main1, workers1 = server.cpu_seconds()
        # the parse workers start with the first body: what they used is all load
        main_cpu, workers_cpu = main1 - main0, workers1 - workers0
        server_cpu = main_cpu + workers_cpu
        busy = busy_cpu_seconds() - busy0
        server_wall = time.monotonic() - wall0
        hwm_kb = server.read_hwm()
        profile = writer_profile(data)
        code = server.stop()
        if code not in (0, -signal.SIGTERM):  # uvicorn re-raises SIGTERM after draining
            print(f"warning: server exited with {code}:\n{server.log_tail()}", file=sys.stderr)

        import duckdb

        con = duckdb.connect(str(data / "seamline.duckdb"), read_only=True)
        stored = con.execute("SELECT count(*) FROM events").fetchone()[0] - already  # type: ignore[index]
        failed_stored = con.execute("SELECT count(*) FROM failed_events").fetchone()[0]  # type: ignore[index]
        con.close()

        parse_bodies = [f"parse-{i:06d}".encode().join(t) for i, t in enumerate(templates)]
        ceiling = parse_ceiling(parse_bodies, args.parse_seconds)
    except BaseException:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
        print(server.log_tail(), file=sys.stderr)
        raise
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    acked = sum(r.acked_events for r in results)
    requests = sum(r.requests for r in results)
    statuses: dict[str, int] = {}
    for r in results:
        for key, value in r.statuses.items():
            statuses[key] = statuses.get(key, 0) + value
    latencies: list[float] = []
    for r in results:
        lat = array("d")
        lat.frombytes(r.latencies)
        latencies.extend(lat)
    latencies.sort()
    window = max(r.last_answer for r in results) - min(r.first_send for r in results)
    durable_rate = acked / window if window > 0 else 0.0
    ceiling_rate = ceiling["parse_normalise_events_per_s"]
    client_cpu = sum(r.cpu_seconds for r in results)
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": args.label,
        "revision": git_revision(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "config": {
            "seconds": args.seconds,
            "clients": args.clients,
            "procs": args.procs,
            "batch_size": args.batch_size,
            "body_bytes_avg": round(body_bytes),
            "server_env": settings_env,
            "duckdb_set": args.duckdb_set,
            "server_exec": args.server_exec,
            "world_events": already,
        },
        "requests": requests,
        "statuses": statuses,
        "client_errors": sum(r.errors for r in results),
        "acked_events": acked,
        "stored_events": stored,
        "failed_events_stored": failed_stored,
        "verified": stored == acked and failed_stored == 0,
        "window_seconds": round(window, 3),
        "durable_events_per_s": round(durable_rate),
        "requests_per_s": round(requests / window, 1) if window > 0 else 0,
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50) * 1000, 2),
            "p90": round(percentile(latencies, 0.90) * 1000, 2),
            "p99": round(percentile(latencies, 0.99) * 1000, 2),
            "max": round(latencies[-1] * 1000, 2) if latencies else None,
        },
        "parse_only": {k: round(v) for k, v in ceiling.items()},
        "ratio_to_parse_ceiling": round(durable_rate / ceiling_rate, 3) if ceiling_rate else None,
        "server_rss_peak_mib": round(hwm_kb / 1024, 1) if hwm_kb else None,
        "server_cpu_cores": round(server_cpu / server_wall, 2),  # with its parse workers
        "server_main_cpu_cores": round(main_cpu / server_wall, 2),
        "parse_workers_cpu_cores": round(workers_cpu / server_wall, 2),
        # Server CPU time per acknowledged event: comparable even when other load steals cores.
        "server_cpu_us_per_event": round(1e6 * server_cpu / acked, 1) if acked else None,
        "client_cpu_cores": round(client_cpu / window, 2) if window > 0 else None,
        # Everything else the machine ran meanwhile (spawning the clients included).
        "other_cpu_cores": round(max(0.0, busy - server_cpu - client_cpu) / server_wall, 2),
        "loadavg_1m_before": round(load_before, 2),
        "server_exit_code": code,
        "writer": profile,
    }

    lat = summary["latency_ms"]
    print()
    print(
        f"durable (200 + committed): {durable_rate:,.0f} events/s "
        f"({summary['requests_per_s']} req/s over {window:.1f} s)"
    )
    print(
        f"parse-only ceiling (1 core): {ceiling_rate:,.0f} events/s "
        f"-> ratio {summary['ratio_to_parse_ceiling']}; with Arrow table build: "
        f"{ceiling['parse_normalise_arrow_events_per_s']:,.0f} events/s"
    )
    print(
        f"latency (200s): p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms, "
        f"max {lat['max']} ms"
    )
    print(f"statuses {statuses}; client errors {summary['client_errors']}")
    print(
        f"server CPU per event (with parse workers) {summary['server_cpu_us_per_event']} us "
        f"(= {1e6 / (summary['server_cpu_us_per_event'] or 1e9):,.0f} events/s per busy core)"
    )
    print(
        f"server RSS peak {summary['server_rss_peak_mib']} MiB; CPU: server "
        f"{summary['server_cpu_cores']} cores (main process {summary['server_main_cpu_cores']}, "
        f"parse workers {summary['parse_workers_cpu_cores']}), "
        f"load generator {summary['client_cpu_cores']}, "
        f"other processes {summary['other_cpu_cores']} (of {os.cpu_count()})"
    )
    if profile and profile["events"]:
        wall, cpu = profile["wall_us_per_event"], profile["cpu_us_per_event"]
        print(
            f"writer, us per event as wall (own CPU), {profile['events_per_group']:,.0f} events "
            "a group: "
            + ", ".join(f"{phase} {wall[phase]:.1f} ({cpu[phase]:.1f})" for phase in wall)
            + f"; total {sum(wall.values()):.1f} ({sum(cpu.values()):.1f})"
        )
    check = "OK" if summary["verified"] else "MISMATCH"
    print(
        f"verification {check}: acknowledged {acked:,}, stored {stored:,}, "
        f"failed_events {failed_stored}"
    )
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RESULTS / f"ingest-{stamp}.json"
        out.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
    return 0 if summary["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
