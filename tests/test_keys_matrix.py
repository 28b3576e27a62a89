"""Keys and tokens: every route of the app x every kind of credential
(reliability-and-security.md §4.1, §4.2 API1/API2/API5, §6.7).

The routes are not listed by hand: they are read from ``app.routes`` of the real
application (built in-process on a scratch workspace), and each one is classified as
JSON API (its scope read from the auth dependency it declares), collection route,
SDK settings route or dashboard page, so a route added later is in the matrix at once.
Every (route, credential) pair is then sent to a real ``seamline serve``:

- no credential, a write key (as Basic and as Bearer), a forged token, a revoked token:
  401/403 on every read and admin route; the 4xx body is the error envelope and holds
  none of the workspace's data (canary values ingested first);
- a read token: everything it reads, ``403`` on every admin route;
- an admin token: no 401/403 anywhere, no 5xx;
- collection routes: only write keys store anything; a secret token there is ``401``;
  the answers are ``{"success": true}`` or the error envelope, never data;
- dashboard pages: credentials in headers are not a session: ``303`` to sign-in.

Also: API tokens are stored only as SHA-256 hashes, secrets are compared in constant
time (checked in the source), and no secret ever reaches the server log.
Figures go to stdout and ``tests/artifacts/keys_matrix.json``.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import inspect
import json
import re
import secrets
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount, Route

import seamline
from tests.conftest import ARTIFACTS, Server

ROOT = Path(seamline.__file__).parent
CANARY_USER = "canary-user-" + secrets.token_hex(6)
CANARY_EVENT = "Canary Event " + secrets.token_hex(6)
CANARY_EMAIL = f"canary-{secrets.token_hex(4)}@example.com"
PUBLIC_API = {"/api/health", "/api/docs", "/api/docs/oauth2-redirect", "/openapi.json"}


@dataclass(frozen=True)
class RouteCase:
    method: str
    path: str  # with path parameters filled in
    template: str
    kind: str  # api-public, api-read, api-admin, ingest, settings, metrics, dashboard, ...


def _scope_of(route: APIRoute) -> str | None:
    """The scope an /api route's auth dependency demands (None: no auth dependency)."""
    for dependency in route.dependant.dependencies:
        call = dependency.call
        if call is not None and getattr(call, "__qualname__", "").startswith("_auth."):
            needed = inspect.getclosurevars(call).nonlocals.get("needed")
            return str(needed)
    return None


def _fill(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x-unknown", template)


def _flat_routes(app: Any) -> list[tuple[str, BaseRoute]]:
    """(full path, route) of every route, routers included (FastAPI >= 0.16x nests
    included routers lazily; older versions list them flat in ``app.routes``)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return [(route.path, route) for route in app.routes]
    return [(str(ctx.path), ctx.original_route) for ctx in iter_route_contexts(app.routes)]


def enumerate_routes(tmp: Path) -> list[RouteCase]:
    """Every (method, path) of the real app, classified."""
    from seamline.app import Workspace
    from seamline.web.server import create_app

    workspace = Workspace(tmp / "routes-workspace")
    try:
        app = create_app(workspace, local_secret="sl_local_" + secrets.token_urlsafe(8))
        cases: list[RouteCase] = []
        for path, route in _flat_routes(app):
            if isinstance(route, Mount):
                static = sorted((ROOT / "web" / "static").iterdir())
                asset = static[0].name if static else "missing"
                cases.append(RouteCase("GET", f"{path}/{asset}", path, "static"))
                continue
            assert isinstance(route, Route | APIRoute), route
            for method in sorted((route.methods or set()) - {"HEAD"}):
                if method == "OPTIONS":
                    kind = "preflight"
                elif path.startswith("/api/") or path == "/openapi.json":
                    scope = _scope_of(route) if isinstance(route, APIRoute) else None
                    kind = f"api-{scope}" if scope else "api-public"
                elif "{write_key}" in path:
                    kind = "settings"
                elif path.rstrip("/") == "/v1/m":
                    kind = "metrics"
                elif path.startswith(("/v1/", "/b", "/batch")):
                    kind = "ingest"
                elif path in ("/sign-in", "/static/plotly.min.js", "/docs/oauth2-redirect"):
                    kind = "dashboard-public"
                else:
                    kind = "dashboard"
                cases.append(RouteCase(method, _fill(path), path, kind))
        return cases
    finally:
        workspace.close()


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@dataclass
class World:
    server: Server
    write_key: str
    other_write_key: str
    read: str
    admin: str
    revoked: str
    forged: str
    routes: list[RouteCase]

    def credentials(self) -> dict[str, dict[str, str]]:
        return {
            "none": {},
            "write-basic": {"Authorization": basic(self.write_key)},
            "write-bearer": {"Authorization": f"Bearer {self.write_key}"},
            "write-x-header": {"X-Write-Key": self.write_key},
            "forged": {"Authorization": f"Bearer {self.forged}"},
            "revoked": {"Authorization": f"Bearer {self.revoked}"},
            "read": {"Authorization": f"Bearer {self.read}"},
            "admin": {"Authorization": f"Bearer {self.admin}"},
            "read-as-basic": {"Authorization": basic(self.read)},
        }

    def secrets(self) -> list[str]:
        return [self.read, self.admin, self.revoked, self.other_write_key]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("keys")
    routes = enumerate_routes(base)
    server = Server(base / "workspace").start()
    try:
        write_key = server.add_source("app-a", "mobile")
        other = server.add_source("app-b", "web")
        read = server.cli("tokens", "add", "reader", "--scope", "read")["token"]
        admin = server.cli("tokens", "add", "owner", "--scope", "admin")["token"]
        revoked = server.cli("tokens", "add", "leaked", "--scope", "admin")["token"]
        assert server.cli("tokens", "revoke", "leaked")["revoked"] == 1
        event = {"type": "identify", "userId": CANARY_USER, "traits": {"email": CANARY_EMAIL}}
        track = {"type": "track", "event": CANARY_EVENT, "userId": CANARY_USER}
        answer = httpx.post(server.url + "/v1/batch", json={"batch": [event, track]},
                            headers={"Authorization": basic(write_key)})  # fmt: skip
        assert answer.status_code == 200
        forged = "sl_sk_" + secrets.token_urlsafe(24)
        yield World(server, write_key, other, read, admin, revoked, forged, routes)
    finally:
        if server.proc is not None:
            server.stop()


def _body_for(case: RouteCase) -> dict[str, Any]:
    if case.kind in ("ingest",):
        return {"batch": [{"type": "track", "event": "Matrix", "userId": "matrix-user"}]}
    return {}


def _send(client: httpx.Client, case: RouteCase, headers: dict[str, str]) -> httpx.Response:
    if case.method in ("POST", "PUT", "PATCH", "DELETE") and case.kind.startswith("dashboard"):
        return client.request(case.method, case.path, headers=headers,
                              data={"name": "x", "channel": "web"})  # fmt: skip
    if case.method in ("POST", "PUT", "PATCH"):
        return client.request(case.method, case.path, headers=headers, json=_body_for(case))
    if case.method == "OPTIONS":
        headers = {**headers, "Origin": "https://example.com",
                   "Access-Control-Request-Method": "POST"}  # fmt: skip
    return client.request(case.method, case.path, headers=headers)


def _expected(case: RouteCase, who: str) -> set[int] | None:
    """Allowed statuses; None means "anything but 401/403/5xx" (an authorised call)."""
    denied_api = {"none": {401}, "write-basic": {401}, "write-bearer": {403},
                  "write-x-header": {401}, "forged": {401}, "revoked": {401},
                  "read-as-basic": {401}}  # fmt: skip
    if case.kind in ("api-read", "api-admin"):
        if who in denied_api:
            return denied_api[who]
        if who == "read" and case.kind == "api-admin":
            return {403}
        return None
    if case.kind == "ingest":
        if who in ("write-basic", "write-x-header"):
            return {200}
        if who == "read-as-basic":
            return {401}  # a secret token where the write key goes
        return {400}  # no write key: a Bearer header is not where SDKs put it
    if case.kind == "dashboard":
        return {303} if case.method == "GET" else {303, 403}
    if case.kind in ("dashboard-public", "api-public", "settings", "metrics", "static"):
        return {200} if case.method == "GET" or case.kind == "metrics" else {400, 403}
    if case.kind == "preflight":
        return {204}
    raise AssertionError(f"unclassified route {case}")


def test_every_route_times_every_credential(world: World) -> None:
    creds = world.credentials()
    kinds = Counter(case.kind for case in world.routes)
    assert kinds["api-read"] >= 10 and kinds["api-admin"] >= 8 and kinds["ingest"] >= 20, kinds
    public_api = {c.template for c in world.routes if c.kind == "api-public"}
    assert public_api <= PUBLIC_API, f"/api routes without an auth dependency: {public_api}"
    canaries = [CANARY_USER, CANARY_EVENT, CANARY_EMAIL, *world.secrets()]
    violations: list[str] = []
    statuses: Counter[str] = Counter()
    with httpx.Client(base_url=world.server.url, timeout=60, follow_redirects=False) as client:
        for case in world.routes:
            for who, headers in creds.items():
                if case.kind == "api-admin" and who == "admin" and case.method == "DELETE":
                    continue  # forgetting / revoking for real is tested elsewhere
                response = _send(client, case, headers)
                statuses[str(response.status_code)] += 1
                where = f"{who} {case.method} {case.path} -> {response.status_code}"
                allowed = _expected(case, who)
                if response.status_code >= 500:
                    violations.append(f"{where}: server error {response.text[:200]}")
                elif allowed is None:
                    if response.status_code in (401, 403):
                        violations.append(f"{where}: refused an authorised call")
                elif response.status_code not in allowed:
                    violations.append(f"{where}: expected {sorted(allowed)}")
                if allowed is not None and allowed <= {400, 401, 403, 303, 204, 200}:
                    if case.kind.startswith("api") and response.status_code in (401, 403):
                        body = response.json()
                        if set(body) != {"code", "message"}:
                            violations.append(f"{where}: not the error envelope: {body}")
                    answered = response.status_code == 200 and case.kind in ("ingest", "metrics")
                    if answered and response.json() != {"success": True}:
                        violations.append(f"{where}: ingest answered data: {response.text}")
                    denied = response.status_code in (400, 401, 403, 303, 204)
                    public = case.kind in ("dashboard-public", "static", "settings",
                                           "metrics", "ingest", "api-public")  # fmt: skip
                    if denied or public:
                        leaked = [c for c in canaries if c in response.text]
                        if leaked:
                            violations.append(f"{where}: leaked {leaked}")
    figures = {
        "routes": len(world.routes),
        "routes_by_kind": dict(kinds),
        "credentials": sorted(creds),
        "requests": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "violations": len(violations),
    }
    _record("matrix", figures)
    assert not violations, "\n".join(violations[:40])


def test_settings_route_is_no_oracle_for_write_keys(world: World) -> None:
    """The SDK settings route answers the same for a real and an invented key."""
    real = httpx.get(f"{world.server.url}/v1/projects/{world.write_key}/settings").json()
    fake_key = "sl_wk_" + secrets.token_urlsafe(18)
    fake = httpx.get(f"{world.server.url}/v1/projects/{fake_key}/settings").json()
    assert json.dumps(real).replace(world.write_key, "K") == json.dumps(fake).replace(fake_key, "K")


def test_no_cors_on_api_routes(world: World) -> None:
    """Browsers on other origins may post events, never read the API (OWASP API8)."""
    origin = {"Origin": "https://evil.example"}
    admin = {"Authorization": f"Bearer {world.admin}", **origin}
    for path in sorted({c.path for c in world.routes if c.kind in ("api-read", "api-admin")}):
        preflight = httpx.options(world.server.url + path, headers={
            **origin, "Access-Control-Request-Method": "GET"})  # fmt: skip
        assert "access-control-allow-origin" not in preflight.headers, path
    answer = httpx.get(world.server.url + "/api/stats", headers=admin)
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_dashboard_sign_in_takes_only_api_tokens(world: World) -> None:
    results: dict[str, int] = {}
    for who, secret in (("write", world.write_key), ("forged", world.forged),
                        ("revoked", world.revoked), ("read", world.read),
                        ("admin", world.admin)):  # fmt: skip
        with httpx.Client(base_url=world.server.url, follow_redirects=False) as client:
            form = client.get("/sign-in")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf, form.text[:500]
            answer = client.post("/sign-in", data={"csrf": csrf.group(1), "token": secret,
                                                   "next": "/"})  # fmt: skip
            results[who] = answer.status_code
            signed_in = answer.status_code == 303
            assert signed_in == (who in ("read", "admin")), (who, answer.status_code)
            for canary in (CANARY_USER, CANARY_EMAIL, *world.secrets()):
                assert canary not in answer.text or who in ("read", "admin"), (who, canary)
            if not signed_in:
                assert client.get("/").status_code == 303  # still no session
    _record("dashboard_sign_in", results)


def test_revoked_token_and_rotation(world: World) -> None:
    """Rotation: a new token works at once, the revoked one never again, on every face."""
    server = world.server
    new = server.cli("tokens", "add", "rotated", "--scope", "read")["token"]
    headers = {"Authorization": f"Bearer {new}"}
    assert httpx.get(server.url + "/api/stats", headers=headers).status_code == 200
    assert server.cli("tokens", "revoke", "rotated")["revoked"] == 1
    answer = httpx.get(server.url + "/api/stats", headers=headers)
    assert answer.status_code == 401 and answer.json()["code"] == "invalid_token"
    listed = {t["name"]: t for t in server.cli("tokens", "list")}
    assert listed["rotated"]["revoked"] is True and listed["leaked"]["revoked"] is True
    again = httpx.delete(server.url + "/api/tokens/rotated",
                         headers={"Authorization": f"Bearer {world.admin}"})  # fmt: skip
    assert again.status_code == 404 and again.json()["code"] == "unknown_token"


def test_secrets_are_stored_hashed_and_never_logged(world: World) -> None:
    """Runs last: stops the server to read the file."""
    server = world.server
    server_file = server.data / "server.json"
    assert stat.S_IMODE(server_file.stat().st_mode) == 0o600
    server.stop()
    tokens = [world.read, world.admin, world.revoked]
    con = duckdb.connect(str(server.data / "seamline.duckdb"), read_only=True)
    try:
        columns = [row[0] for row in con.execute("DESCRIBE tokens").fetchall()]
        rows = con.execute("SELECT * FROM tokens").fetchall()
    finally:
        con.close()
    text = json.dumps(rows, default=str)
    for token in tokens:
        assert token not in text, "a plaintext API token is stored"
        assert hashlib.sha256(token.encode()).hexdigest() in text
    hints = [r[columns.index("hint")] for r in rows]
    assert all(len(h.rstrip(".")) <= 10 for h in hints), hints
    raw = (server.data / "seamline.duckdb").read_bytes()
    assert not any(token.encode() in raw for token in tokens)
    log = server.log()
    for secret in [*tokens, world.write_key, world.other_write_key, world.forged]:
        assert secret not in log, "a secret reached the server log"
    _record("secrets", {"tokens_checked": len(tokens), "plaintext_in_tokens_table": 0,
                        "secrets_in_log": 0, "server_json_mode": "0600"})  # fmt: skip


# -- constant-time comparison, checked in the source ---------------------------------
SECRET_NAME = re.compile(r"secret|token|csrf|password|signature|digest|api_?key|write_key", re.I)
NOT_SECRET = re.compile(r"scope|kind|prefix|type|name|count|len|hint|path|id$", re.I)


def _names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.Subscript):
        return _names(node.value)
    if isinstance(node, ast.Call):
        return _names(node.func)
    return []


def test_secrets_are_compared_in_constant_time() -> None:
    """No ``==``/``!=`` between secret-looking values in the web, store, collect and
    moments code; those comparisons go through ``secrets``/``hmac.compare_digest``."""
    offenders: list[str] = []
    uses = 0
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "compare_digest":
                uses += 1
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) for o in operands):
                continue  # comparing with a literal (a scheme, a scope, None)
            names = [n for o in operands for n in _names(o)]
            if any(SECRET_NAME.search(n) and not NOT_SECRET.search(n) for n in names):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: "
                                 f"{ast.unparse(node)}")  # fmt: skip
    _record("constant_time", {"compare_digest_uses": uses, "plain_comparisons": len(offenders)})
    assert uses >= 3
    assert not offenders, "\n".join(offenders)


FIGURES: dict[str, Any] = {}


def _record(name: str, value: Any) -> None:
    FIGURES[name] = value
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "keys_matrix.json").write_text(json.dumps(FIGURES, indent=2) + "\n")
    print(f"keys matrix {name}:", json.dumps(value))
