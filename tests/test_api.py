"""JSON API: scopes, the error envelope and the OpenAPI document."""

from __future__ import annotations

import httpx

from tests.conftest import Server


def test_scopes_and_write_keys(server: Server, write_key: str) -> None:
    read = server.cli("tokens", "add", "reader", "--scope", "read")["token"]
    admin = server.admin_token()

    def get(path: str, secret: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.get(server.url + path, headers=headers)

    def post(path: str, secret: str, body: object) -> httpx.Response:
        return httpx.post(server.url + path, json=body,
                          headers={"Authorization": f"Bearer {secret}"})  # fmt: skip

    for path in ("/api/stats", "/api/sources", "/api/failed-events", "/api/tokens"):
        assert get(path, None).status_code == 401
        assert get(path, write_key).status_code == 403
        assert get(path, "sl_sk_forged").status_code == 401
        assert get(path, admin).status_code == 200
    assert get("/api/stats", read).status_code == 200
    assert get("/api/tokens", read).status_code == 403
    new_source = {"name": "web", "channel": "web"}
    assert post("/api/sources", read, new_source).status_code == 403
    assert post("/api/sources", write_key, new_source).status_code == 403
    created = post("/api/sources", admin, new_source)
    assert created.status_code == 201 and created.json()["write_key"].startswith("sl_wk_")
    assert post("/api/tokens", read, {"name": "x", "scope": "admin"}).status_code == 403
    imported = post("/api/import", write_key, {"source": "web", "events": []})
    assert imported.status_code == 403


def test_error_envelope_shape(server: Server) -> None:
    admin = server.admin_token()
    headers = {"Authorization": f"Bearer {admin}"}
    responses = [
        httpx.get(server.url + "/nowhere"),
        httpx.get(server.url + "/api/stats"),
        httpx.post(server.url + "/api/sources", json={"name": "x"}, headers=headers),
        httpx.post(
            server.url + "/api/sources", json={"name": "x", "channel": "tv"}, headers=headers
        ),
        httpx.post(server.url + "/v1/batch", content=b"{"),
    ]
    for response in responses:
        assert response.status_code in (400, 401, 404)
        body = response.json()
        assert set(body) == {"code", "message"} and body["message"]
    assert "channel" in responses[2].json()["message"]
    assert "Did you mean" not in responses[3].json()["message"] or "tv" in responses[3].text


def test_openapi_documents_the_api(server: Server) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    assert {"/api/stats", "/api/sources", "/api/tokens", "/api/import"} <= set(schema["paths"])
