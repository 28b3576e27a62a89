"""Reach a workspace whether or not a server owns it.

DuckDB lets one process open the file, so while ``seamline serve`` runs the CLI
talks to it over HTTP, using the address and per-run admin secret the server
records in ``<data dir>/server.json``. :class:`RemoteWorkspace` has the same
methods as :class:`seamline.app.Workspace`.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from seamline.analytics import FunnelResult, JourneyResult
from seamline.analytics.metrics import MetricsScoreResult
from seamline.analytics.result import OutcomeResult, PathResult, RetentionResult
from seamline.analytics.seams import SeamsResult
from seamline.app import Workspace
from seamline.errors import SeamlineError, StoreUnavailable


class _IdentityCalls:
    """Identity methods of :class:`RemoteWorkspace` (kept apart for readability)."""

    _call: Any

    def person(self, identifier: str, limit: int = 500) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "GET", f"/api/persons/{quote(identifier, safe='')}", params={"limit": limit}
        )
        return result

    def explain(self, first: str, second: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "GET", "/api/identity/explain", params={"a": first, "b": second}
        )
        return result

    def rebuild_identity(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/api/identity/rebuild")
        return result

    def forget(self, identifier: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "DELETE", f"/api/persons/{quote(identifier, safe='')}"
        )
        return result


class _AnalyticsCalls:
    """Analytics methods of :class:`RemoteWorkspace`: same arguments, same result objects."""

    _call: Any

    def funnel(self, steps: list[str], within: str = "7d", by: str | None = None,
               **options: Any) -> FunnelResult:  # fmt: skip
        params: dict[str, Any] = {"steps": steps, "within": within}
        if by:
            params["by"] = by
        for key, value in options.items():
            if value not in (None, False, [], ()):
                params[key] = value.isoformat() if hasattr(value, "isoformat") else value
        return FunnelResult(self._call("GET", "/api/funnel", params=params), "steps")

    def journeys(self, from_event: str | None = None, min_people: int = 1,
                 top: int | None = None, lane: str = "channel", **options: Any
                 ) -> JourneyResult:  # fmt: skip
        params: dict[str, Any] = {"min_people": min_people, "lane": lane}
        if from_event:
            params["from_event"] = from_event
        if top:
            params["top"] = top
        for key, value in options.items():
            if value is not None:
                params[key] = value.isoformat()
        return JourneyResult(self._call("GET", "/api/journeys", params=params), "edges")

    def lake_export(self, lake: str, incremental: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/api/lake/export", json={"directory": lake, "incremental": incremental}
        )
        return result

    def seams(self, within: str = "2h", min_people: int = 30, **options: Any) -> SeamsResult:
        params: dict[str, Any] = {"within": within, "min_people": min_people}
        params.update({k: v for k, v in options.items() if v not in (None, False, [], ())})
        return SeamsResult(self._call("GET", "/api/seams", params=params), "seams")

    def paths(self, event: str, steps: int = 3, direction: str = "after", top: int = 10,
              collapse_repeats: bool = False, *, start: datetime | None = None,
              end: datetime | None = None) -> PathResult:  # fmt: skip
        params: dict[str, Any] = {"event": event, "steps": steps, "direction": direction,
                                  "top": top, "collapse_repeats": collapse_repeats}  # fmt: skip
        params.update(_dates(start, end))
        return PathResult(self._call("GET", "/api/paths", params=params), "paths")

    def retention(self, start_event: str | None = None, return_event: str | None = None,
                  period: str = "week", periods: int = 8, *, start: datetime | None = None,
                  end: datetime | None = None) -> RetentionResult:  # fmt: skip
        params: dict[str, Any] = {"period": period, "periods": periods}
        if start_event:
            params["start_event"] = start_event
        if return_event:
            params["return_event"] = return_event
        params.update(_dates(start, end))
        return RetentionResult(self._call("GET", "/api/retention", params=params), "cohorts")

    def outcomes(self, period: str = "week", outcome: str | list[str] | None = None, *,
                 start: datetime | None = None, end: datetime | None = None
                 ) -> OutcomeResult:  # fmt: skip
        params: dict[str, Any] = {"period": period}
        if outcome:
            params["outcome"] = [outcome] if isinstance(outcome, str) else outcome
        params.update(_dates(start, end))
        return OutcomeResult(self._call("GET", "/api/outcomes", params=params), "periods")

    def metrics_score(self, outcome: str | None = None, metrics: list[str] | None = None,
                      observe: str = "14d", predict: str = "30d", *, holdout: float = 0.5,
                      builtins: bool = True, start: datetime | None = None,
                      end: datetime | None = None) -> MetricsScoreResult:  # fmt: skip
        params: dict[str, Any] = {"observe": observe, "predict": predict, "holdout": holdout,
                                  "builtins": builtins}  # fmt: skip
        if outcome:
            params["outcome"] = outcome
        if metrics:
            params["metric"] = list(metrics)
        params.update(_dates(start, end))
        return MetricsScoreResult(self._call("GET", "/api/metrics/score", params=params),
                                  "metrics")  # fmt: skip


def _dates(start: datetime | None, end: datetime | None) -> dict[str, str]:
    """The date range as ISO-8601 query parameters."""
    dates = {"start": start, "end": end}
    return {key: value.isoformat() for key, value in dates.items() if value is not None}


class _MomentsCalls:
    """Moment methods of :class:`RemoteWorkspace` (admin routes under ``/api/moments``)."""

    _call: Any

    def add_moment(self, definition: str | dict[str, Any]) -> dict[str, Any]:
        body = {"text": definition} if isinstance(definition, str) else {"definition": definition}
        result: dict[str, Any] = self._call("POST", "/api/moments", json=body)
        return result

    def list_moments(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/api/moments")
        return result

    def enable_moment(self, name: str, enabled: bool = True) -> dict[str, Any]:
        action = "enable" if enabled else "disable"
        result: dict[str, Any] = self._call("POST", f"/api/moments/{quote(name, safe='')}/{action}")
        return result

    def disable_moment(self, name: str) -> dict[str, Any]:
        return self.enable_moment(name, False)

    def test_moment(self, name: str, person: str, replay_history: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "GET", f"/api/moments/{quote(name, safe='')}/test",
            params={"person": person, "replay_history": replay_history},
        )  # fmt: skip
        return result

    def add_places(self, definition: str | dict[str, Any]) -> dict[str, Any]:
        body = {"text": definition} if isinstance(definition, str) else {"definition": definition}
        result: dict[str, Any] = self._call("POST", "/api/places", json=body)
        return result

    def list_places(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/api/places")
        return result

    def remove_place(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", f"/api/places/{quote(name, safe='')}")
        return result

    def moment_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/api/moments/stats")
        return result

    def deliveries(self, failed: bool = False, limit: int = 100,
                   moment: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
        params: dict[str, Any] = {"failed": failed, "limit": limit}
        if moment:
            params["moment"] = moment
        result: list[dict[str, Any]] = self._call("GET", "/api/deliveries", params=params)
        return result

    def replay_delivery(self, delivery_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/api/deliveries/{quote(delivery_id, safe='')}/replay"
        )
        return result


class _AccountsCalls:
    """Account methods of :class:`RemoteWorkspace` (admin routes under ``/api/accounts``)."""

    _call: Any

    def invite_account(self, email: str, role: str, name: str | None = None,
                       **_: Any) -> dict[str, Any]:  # fmt: skip
        result: dict[str, Any] = self._call(
            "POST", "/api/accounts/invites", json={"email": email, "role": role, "name": name}
        )
        return result

    def list_accounts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/api/accounts")
        return result

    def disable_account(self, email: str, **_: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/api/accounts/{quote(email, safe='')}/disable"
        )
        return result

    def set_account_role(self, email: str, role: str, **_: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/api/accounts/{quote(email, safe='')}/role", json={"role": role}
        )
        return result

    def audit_log(self, limit: int = 200, action: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if action:
            params["action"] = action
        result: list[dict[str, Any]] = self._call("GET", "/api/audit", params=params)
        return result


class RemoteWorkspace(_IdentityCalls, _AnalyticsCalls, _MomentsCalls, _AccountsCalls):
    def __init__(self, url: str, token: str, data_dir: Path):
        self.url = url
        self.data_dir = data_dir
        self._http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )

    def __enter__(self) -> RemoteWorkspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StoreUnavailable(
                f"The server at {self.url} that owns {self.data_dir} did not answer ({exc})."
            ) from None
        if response.status_code >= 400:
            try:
                body = response.json()
                raise SeamlineError(body["message"], code=body["code"],
                                    status=response.status_code)  # fmt: skip
            except (ValueError, KeyError, TypeError):
                raise SeamlineError(
                    f"The server answered {response.status_code}: {response.text[:200]}",
                    status=response.status_code,
                ) from None
        return response.json()

    def add_source(self, name: str, channel: str, unit: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/api/sources", json={"name": name, "channel": channel, "unit": unit}
        )
        return result

    def sources(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/api/sources")
        return result

    def add_token(self, name: str, scope: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/api/tokens", json={"name": name, "scope": scope}
        )
        return result

    def revoke_token(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", f"/api/tokens/{quote(name, safe='')}")
        return result

    def tokens(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/api/tokens")
        return result

    def import_events(self, source: str, events: list[Any]) -> dict[str, Any]:
        # msgspec encodes the datetimes that Parquet files yield as ISO-8601 strings.
        result: dict[str, Any] = self._call(
            "POST",
            "/api/import",
            content=msgspec.json.encode({"source": source, "events": events}),
            headers={"Content-Type": "application/json"},
        )
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/api/stats")
        return result

    def failed_events(self, limit: int = 100) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "GET", "/api/failed-events", params={"limit": limit}
        )
        return result


def running_server(data_dir: Path) -> dict[str, Any] | None:
    """The live server that owns ``data_dir``, from its server.json, or None."""
    path = data_dir / "server.json"
    try:
        info: dict[str, Any] = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, TypeError, ProcessLookupError):
        return None
    except PermissionError:  # alive, owned by someone else
        pass
    try:
        httpx.get(info["url"] + "/api/health", timeout=3).raise_for_status()
    except httpx.HTTPError:
        return None
    return info


def connect(data_dir: Path) -> Workspace | RemoteWorkspace:
    """The server's workspace over HTTP if one is running, else the file itself."""
    info = running_server(data_dir)
    if info is not None:
        return RemoteWorkspace(info["url"], info["token"], data_dir)
    return Workspace(data_dir)
