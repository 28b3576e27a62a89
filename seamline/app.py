"""The application object: wires the store, the writer and the collector.

It holds no logic of its own. The CLI, the JSON API and the Python API are three
faces of these methods; :class:`seamline.client.RemoteWorkspace` offers the same
methods over HTTP for when a running server owns the workspace.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from seamline.accounts import AccountsService
from seamline.analytics import FunnelResult, JourneyResult
from seamline.analytics.cache import Cached, ResultCache, SharedRows, key_of
from seamline.analytics.metrics import MetricsScoreResult, score_metrics
from seamline.analytics.result import OutcomeResult, PathResult, RetentionResult
from seamline.analytics.runner import Analyses
from seamline.analytics.seams import SeamsResult
from seamline.analytics.snapshot import SnapshotHolder
from seamline.collect import Collector
from seamline.errors import BadRequest, NotFound, did_you_mean
from seamline.events.timestamps import utcnow
from seamline.identity import IdentityRules
from seamline.identity.service import IdentityService, candidate_keys
from seamline.moments.service import MomentsService
from seamline.settings import Settings
from seamline.store import SCOPES, AppendResult, Store, Writer
from seamline.store import accounts as account_tables
from seamline.store import identity as identity_tables
from seamline.store import lake as lake_files
from seamline.store import moments as moment_tables
from seamline.store.sequence_fetch import fetch_sequences

log = logging.getLogger("seamline")

CHANNELS = ("mobile", "web", "server", "call_center", "email", "store", "sms", "push", "chat")
DEFAULT_DATA_DIR = Path("seamline-data")


class Workspace:
    """An open workspace. Prefer :func:`seamline.open`; close it when done."""

    def __init__(self, data_dir: Path, settings: Settings | None = None):
        self.data_dir = Path(data_dir)
        self.settings = settings or Settings.load(self.data_dir)
        try:
            self.rules = IdentityRules.from_settings(
                self.settings.phone_region,
                self.settings.identity_caps,
                self.settings.identity_max_component,
                self.settings.identity_blocked_values,
            )
        except ValueError as exc:
            raise BadRequest(str(exc), code="invalid_setting") from None
        self.store = Store.open(self.data_dir, self.rules)
        # the analyses run on the store's engine (a LakeWorkspace runs the same on Spark)
        # queries run through SharedRows: analyses of one data version share their scans
        rows = SharedRows(self.store, lambda: self.writer.data_version,
                          self.settings.result_cache_rows_mb * 2**20,
                          self.settings.result_cache_seconds)  # fmt: skip
        # ...and what the sorted sequence snapshot can answer comes from it (one per version)
        self.snapshots = SnapshotHolder(lambda columns: fetch_sequences(self.store, columns),
                                        lambda: self.writer.data_version,
                                        enabled=bool(self.settings.analytics_snapshot))  # fmt: skip
        self.analyses = Analyses(rows, self.settings, self.snapshots)
        if self.settings.checkpoint_threshold:
            self.store.set_checkpoint_threshold(self.settings.checkpoint_threshold)
        self.writer = Writer(
            self.store,
            queue_max_events=self.settings.queue_max_events,
            group_commit_events=self.settings.group_commit_events,
            group_commit_wait_ms=self.settings.group_commit_wait_ms,
            retry_after_seconds=self.settings.retry_after_seconds,
            identity=IdentityService(self.rules),
        ).start()
        self.collector = Collector(self.store, self.writer, self.settings)
        try:
            self.moments = MomentsService(self.store, self.writer, self.settings).start()
            self.accounts = AccountsService(self.store, self.writer, self.settings)
        except BaseException:
            self.writer.stop()
            self.store.close()
            raise
        self._closed = False
        self._stoppers: list[Callable[[], None]] = [self.collector.close]
        self.results = ResultCache(self.settings.result_cache_entries,
                                   self.settings.result_cache_seconds)  # fmt: skip

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Commit everything queued, checkpoint and release the file. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for stop in self._stoppers:
            stop()
        self.moments.stop()  # before the writer: the scheduler and outbox write through it
        self.writer.stop()
        self.store.close()

    # -- sources and tokens --------------------------------------------------------
    def add_source(self, name: str, channel: str, unit: str | None = None) -> dict[str, Any]:
        name = name.strip()
        if not name:
            raise BadRequest("A source needs a name.", code="invalid_name")
        if channel not in CHANNELS:
            raise BadRequest(
                f"Unknown channel '{channel}'; use one of {', '.join(CHANNELS)}."
                f"{did_you_mean(channel, CHANNELS)}",
                code="invalid_channel",
            )
        source = self.writer.call(lambda con: Store.insert_source(con, name, channel, unit))
        result = source.result()
        self.collector.refresh_sources()
        return {"name": result.name, "channel": result.channel, "unit": result.unit,
                "write_key": result.write_key}  # fmt: skip

    def sources(self) -> list[dict[str, Any]]:
        return [source.to_dict() for source in self.store.sources()]

    def add_token(self, name: str, scope: str, actor: str = "cli",
                  ip: str | None = None) -> dict[str, Any]:  # fmt: skip
        if scope not in SCOPES:
            raise BadRequest(
                f"Unknown scope '{scope}'; use 'read' or 'admin'.{did_you_mean(scope, SCOPES)}",
                code="invalid_scope",
            )
        def insert(con: Any) -> tuple[Any, str]:
            made = Store.insert_token(con, name, scope)
            account_tables.record(con, utcnow(), actor, "token.create", name, ip, {"scope": scope})
            return made

        token, secret = self.writer.call(insert).result()
        return {"name": token.name, "scope": token.scope, "token": secret}

    def tokens(self) -> list[dict[str, Any]]:
        return self.store.tokens()

    def revoke_token(self, name: str, actor: str = "cli",
                     ip: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Revoke the API tokens with this name at once (rotation: add a new one first)."""
        def revoke(con: Any) -> int:
            count = Store.revoke_tokens(con, name)
            account_tables.record(con, utcnow(), actor, "token.revoke", name, ip, {"count": count})
            return count

        count = self.writer.call(revoke).result()
        self.accounts.changed()  # its dashboard sessions end at their next request
        return {"name": name, "revoked": count}

    # -- dashboard accounts (logic in seamline.accounts) ----------------------------------
    def invite_account(self, email: str, role: str, name: str | None = None, *, actor: str = "cli",
                       base_url: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Invite a dashboard user; the answer's one-time ``link`` starts their enrolment."""
        return self.accounts.invite(email, role, name=name, actor=actor, base_url=base_url)

    def list_accounts(self) -> list[dict[str, Any]]:
        return self.accounts.describe()

    def disable_account(self, email: str, *, actor: str = "cli") -> dict[str, Any]:
        return self.accounts.disable(email, actor=actor)

    def set_account_role(self, email: str, role: str, *, actor: str = "cli") -> dict[str, Any]:
        return self.accounts.set_role(email, role, actor=actor)

    def audit_log(self, limit: int = 200, action: str | None = None) -> list[dict[str, Any]]:
        """Sign-ins and admin actions, newest first (``action``: a prefix such as sign_in)."""
        return self.accounts.audit(limit, action)

    # -- data ------------------------------------------------------------------
    def import_events(self, source: str, events: list[Any]) -> dict[str, Any]:
        """Import decoded events for a source, keeping their timestamps; returns counts."""
        result: AppendResult = self.collector.import_events(
            self.store.source_named(source), events
        ).result()
        return result.to_dict()

    def stats(self) -> dict[str, Any]:
        stats = self.collector.add_rate_limited(self.store.stats())
        stats["writer"] = self.writer.profile.to_dict()  # since this process started
        return stats

    def failed_events(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.store.failed_events(limit)

    def event_names(self, limit: int = 500) -> list[dict[str, Any]]:
        """Event names present (track events, page and screen names) with counts, most first."""
        return self.store.event_names(limit)

    # -- identity ------------------------------------------------------------------
    def _person_of(self, identifier: str) -> tuple[str, str, str] | None:
        with self.store.cursor() as cur:
            found = identity_tables.find_identities(cur, candidate_keys(identifier, self.rules))
        return found[0] if found else None

    def person(self, identifier: str, limit: int = 500) -> dict[str, Any]:
        """One person's identities, how each was linked, refusals and timeline."""
        found = self._person_of(identifier)
        if found is None:
            # a person id (as in seams' people_examples) works too
            by_id = self._profile_by_id(identifier, limit)
            if by_id is None:
                raise NotFound(self._unknown(identifier), code="unknown_identifier")
            by_id["matched"] = {"kind": "person_id", "value": identifier}
            return by_id
        with self.store.cursor() as cur:
            profile = identity_tables.person_profile(cur, found[2], limit)
        profile["matched"] = {"kind": found[0], "value": found[1]}
        return profile

    def person_by_id(self, person_id: str, limit: int = 500) -> dict[str, Any]:
        """A person by person id (as in seams' ``people_examples``), merged ids followed."""
        profile = self._profile_by_id(person_id, limit)
        if profile is None:
            raise NotFound(f"No person has the id '{person_id}'.", code="unknown_person")
        return profile

    def _profile_by_id(self, person_id: str, limit: int) -> dict[str, Any] | None:
        with self.store.cursor() as cur:
            profile = identity_tables.person_profile(
                cur, identity_tables.resolve_person(cur, person_id), limit
            )
        if not profile["identities"] and not profile["event_count"]:
            return None
        return profile

    def _unknown(self, identifier: str) -> str:
        if not candidate_keys(identifier, self.rules):
            return (f"'{identifier}' is a placeholder value (like 'undefined' or all zeros); "
                    "it never identifies anyone.")  # fmt: skip
        with self.store.cursor() as cur:
            for key in candidate_keys(identifier, self.rules):
                detail = identity_tables.is_hub(cur, key)
                if detail:
                    return (f"{key[0]} '{key[1]}' is shared ({detail}), so it links nobody; "
                            "look a person up by their user id.")  # fmt: skip
        return (f"No person has the identifier '{identifier}'. Identifiers are user ids, "
                "anonymous ids, device ids, emails and phone numbers.")  # fmt: skip

    def explain(self, first: str, second: str) -> dict[str, Any]:
        """Why two identifiers are, or are not, the same person."""
        sides = []
        for identifier in (first, second):
            found = self._person_of(identifier)
            entry: dict[str, Any] = {"identifier": identifier, "person_id": None}
            if found is None:
                entry["note"] = self._unknown(identifier)
            else:
                kind, value, person = found
                with self.store.cursor() as cur:
                    row = cur.execute(
                        "SELECT message_id, linked_via, first_seen FROM identities "
                        "WHERE id_type = ? AND id_value = ?", [kind, value]).fetchone()  # fmt: skip
                entry.update(kind=kind, value=value, person_id=person)
                with self.store.cursor() as cur:
                    shared = identity_tables.is_hub(cur, (kind, value))
                if shared:
                    entry["shared"] = (f"shared ({shared}): it stays with the person it first "
                                       "linked to and links nobody else")  # fmt: skip
                if row:
                    entry.update(message_id=row[0], linked_via=row[1],
                                 first_seen=row[2].isoformat())  # fmt: skip
            sides.append(entry)
        same = sides[0]["person_id"] is not None and sides[0]["person_id"] == sides[1]["person_id"]
        values = [s.get("value", s["identifier"]) for s in sides]
        persons = [s["person_id"] or "" for s in sides]
        with self.store.cursor() as cur:
            # refusals about either identifier, or made on one person's event against the other
            refusals = cur.execute(
                "SELECT r.refused_at, r.id_type, r.id_value, r.reason, r.detail, r.message_id "
                "FROM identity_refusals r WHERE r.id_value IN (?, ?) OR (r.person_id IN (?, ?) "
                "AND EXISTS (SELECT 1 FROM events_resolved e WHERE e.message_id = r.message_id "
                "AND e.resolved_person_id IN (?, ?) AND e.resolved_person_id <> r.person_id)) "
                "ORDER BY r.refused_at LIMIT 20",
                [*values, *persons, *persons],
            ).fetchall()
            merges = []
            if same:
                merges = cur.execute(
                    "SELECT merged_at, loser, message_id, via FROM person_merges "
                    "WHERE winner = ? ORDER BY merged_at", [sides[0]["person_id"]]
                ).fetchall()  # fmt: skip
        if same:
            verdict = "same person"
        elif None in (sides[0]["person_id"], sides[1]["person_id"]):
            verdict = "not the same person: an identifier is unknown, placeholder or shared"
        elif refusals:
            verdict = "not the same person: a link between them was refused (see refusals)"
        else:
            verdict = "not the same person: no event links them"
        return {
            "same_person": same,
            "verdict": verdict,
            "identifiers": sides,
            "merges": [{"at": m[0].isoformat(), "merged_person": m[1], "message_id": m[2],
                        "via": m[3]} for m in merges],
            "refusals": [{"at": r[0].isoformat(), "kind": r[1], "value": r[2], "reason": r[3],
                          "detail": r[4], "message_id": r[5]} for r in refusals],
        }  # fmt: skip

    def rebuild_identity(self) -> dict[str, Any]:
        """Recompute persons from every stored identifier (connected components) and compare."""
        # integer-coded identifiers and SciPy components; identity_tables.rebuild (recursive
        # SQL) is the reference implementation it is tested against
        from seamline.store.identity_rebuild import rebuild

        with self.store.cursor() as cur:
            return rebuild(cur, self.rules.blocked_list())

    def forget(self, identifier: str) -> dict[str, Any]:
        """Delete a person's events, identities and derived rows; suppress their identifiers."""

        def run(con: Any) -> dict[str, Any]:
            found = self.writer.identity.forget(con, identifier, utcnow())
            found["deleted"]["moments"] = moment_tables.forget_orphans(con)  # timers, outbox
            return found

        result: dict[str, Any] = self.writer.call(run).result()
        return result

    # -- moments ---------------------------------------------------------------------
    def add_moment(self, definition: str | dict[str, Any]) -> dict[str, Any]:
        """Save a moment rule (YAML/JSON text or a mapping); the same name replaces it."""
        return self.moments.add(definition)

    def list_moments(self) -> list[dict[str, Any]]:
        """Every moment rule, secrets redacted."""
        return self.moments.describe()

    def enable_moment(self, name: str, enabled: bool = True) -> dict[str, Any]:
        return self.moments.set_enabled(name, enabled)

    def disable_moment(self, name: str) -> dict[str, Any]:
        return self.moments.set_enabled(name, False)

    def test_moment(self, name: str, person: str, replay_history: bool = False) -> dict[str, Any]:
        """Dry run: what the rule would do over a person's stored journey (any identifier)."""
        found = self._person_of(person)
        if found is None:
            raise NotFound(self._unknown(person), code="unknown_identifier")
        return self.moments.test(name, found[2], replay_history)

    def add_places(self, definition: str | dict[str, Any]) -> dict[str, Any]:
        """Save workspace places for location moments (YAML/JSON text or a mapping)."""
        return self.moments.add_places(definition)

    def list_places(self) -> list[dict[str, Any]]:
        return self.moments.list_places()

    def remove_place(self, name: str) -> dict[str, Any]:
        return self.moments.remove_place(name)

    def moment_stats(self) -> dict[str, Any]:
        """Per rule: triggered, cancelled by unless, capped, sent, failed, ..."""
        return self.moments.stats()

    def deliveries(self, failed: bool = False, limit: int = 100,
                   moment: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """The outbox, newest first; ``failed`` lists the dead letters only."""
        return self.moments.deliveries(failed, limit, moment)

    def replay_delivery(self, delivery_id: str) -> dict[str, Any]:
        """Send a failed or expired delivery again, under the same webhook-id."""
        return self.moments.replay(delivery_id)

    # -- analytics ------------------------------------------------------------------
    def funnel(
        self,
        steps: list[str],
        within: str = "7d",
        by: str | None = None,
        *,
        by_step: int | None = None,
        strict: bool = False,
        step_windows: list[str | None] | None = None,
        exclude: list[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        where: dict[str, Any] | None = None,
    ) -> FunnelResult:
        """People per ordered step (see the README's funnel semantics).

        ``steps`` are event names, optionally with filters:
        ``"Order Completed[properties.plan=pro]"``.
        ``by_step`` is 1-based (None: first touch). ``exclude`` events void an attempt when
        they happen between its first and last step.
        """
        return self.analyses.funnel(steps, within, by, by_step=by_step, strict=strict,
                                    step_windows=step_windows, exclude=exclude, start=start,
                                    end=end, where=where)  # fmt: skip

    def journeys(
        self,
        from_event: str | None = None,
        min_people: int = 1,
        top: int | None = None,
        lane: str = "channel",
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> JourneyResult:
        """The journey map: edges between touchpoints, with people, transitions and
        hand-off times."""
        return self.analyses.journeys(from_event, min_people, top, lane, start=start, end=end)

    def _declared(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(outcome events, costly events, costly channels) declared for the workspace."""
        return self.analyses.declared()

    def seams(
        self,
        within: str = "2h",
        min_people: int = 30,
        *,
        funnel: list[str] | None = None,
        funnel_within: str = "1d",
        by: list[str] | None = None,
        outcome_within: str = "7d",
        include_all: bool = False,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> SeamsResult:
        """Ranked failing hand-offs: costly contacts, loops, outcome routes, broken segments.

        ``funnel`` (step events) adds broken-segment seams broken down by each field of ``by``
        (default app_version, os_name, source).
        """
        return self.analyses.seams(within, min_people, funnel=funnel, funnel_within=funnel_within,
                                   by=by, outcome_within=outcome_within, include_all=include_all,
                                   start=start, end=end)  # fmt: skip

    def paths(
        self,
        event: str,
        steps: int = 3,
        direction: Literal["after", "before"] = "after",
        top: int = 10,
        collapse_repeats: bool = False,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> PathResult:
        """Top paths: each person's first ``event`` and the ``steps`` touchpoints after it
        (or before it), with people and share (see the README's paths semantics)."""
        return self.analyses.paths(event, steps, direction, top, collapse_repeats,
                                   start=start, end=end)  # fmt: skip

    def retention(
        self,
        start_event: str | None = None,
        return_event: str | None = None,
        period: str = "week",
        periods: int = 8,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> RetentionResult:
        """Cohorts by the period of each person's first ``start_event`` (None: any
        touchpoint) and, per period offset, the people who did ``return_event`` again."""
        return self.analyses.retention(start_event, return_event, period, periods,
                                       start=start, end=end)  # fmt: skip

    def outcomes(
        self,
        period: str = "week",
        outcome: str | list[str] | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> OutcomeResult:
        """Per period: outcome rate, time to outcome, costly contacts per person and
        containment, for the declared outcome events (settings) or ``outcome``."""
        return self.analyses.outcomes(period, outcome, start=start, end=end)

    def metrics_score(
        self,
        outcome: str | None = None,
        metrics: list[str] | None = None,
        observe: str = "14d",
        predict: str = "30d",
        *,
        holdout: float = 0.5,
        builtins: bool = True,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> MetricsScoreResult:
        """Which metrics matter: each candidate metric's held-out AUC (with interval),
        Spearman, sensitivity, stability, inflatability and verdict for ``outcome`` (an
        event, ``retention:30``, ``no_costly_contact``; default the declared outcomes)."""
        return score_metrics(self.store, self._declared(), outcome, metrics, observe, predict,
                             holdout=holdout, builtins=builtins, start=start,
                             end=end)  # fmt: skip

    # -- cached analyses (dashboard, JSON API) ------------------------------------------
    CACHEABLE = ("stats", "event_names", "funnel", "journeys", "seams", "paths", "retention",
                 "outcomes", "metrics_score")  # fmt: skip

    def prepare(self) -> dict[str, Any]:
        """Build the sorted sequence snapshot of the current data version now (analyses
        otherwise build it on first use). Returns its size and build time."""
        snap = self.snapshots.get()
        if snap is None:
            return {"enabled": False}
        return {"enabled": True, "version": snap.version, "rows": len(snap),
                "persons": len(snap.person_ids), "bytes": snap.nbytes,
                "build_seconds": snap.build_seconds}  # fmt: skip

    @property
    def data_version(self) -> int:
        """A counter bumped by every commit: results from an older version are stale."""
        return self.writer.data_version

    def cached(self, analysis: str, **params: Any) -> Cached[Any]:
        """``analysis(**params)`` from the result cache while no commit happened since.

        Parameters are bound to the method's signature with its defaults, so
        ``cached("seams")`` and ``cached("seams", within="2h")`` share one entry. The value
        is shared between callers: read it, do not change it.
        """
        if analysis not in self.CACHEABLE:
            raise BadRequest(f"'{analysis}' is not a cached analysis; use one of "
                             f"{', '.join(self.CACHEABLE)}.", code="invalid_analysis")  # fmt: skip
        method = getattr(self, analysis)
        try:
            bound = inspect.signature(method).bind(**params)
        except TypeError as exc:
            raise BadRequest(f"{analysis}: {exc}", code="invalid_parameters") from None
        bound.apply_defaults()
        return self.results.get_or_compute(key_of(analysis, bound.arguments),
                                           lambda: self.writer.data_version,
                                           lambda: method(**bound.arguments))  # fmt: skip

    def on_close(self, stop: Callable[[], None]) -> None:
        """Call ``stop()`` first when the workspace closes (background threads)."""
        self._stoppers.append(stop)

    # -- lake --------------------------------------------------------------------------
    def lake_export(self, lake: str | Path, incremental: bool = False) -> dict[str, Any]:
        """Publish this workspace's events, identities and person map to a Parquet lake."""
        target = Path(lake)
        collector = lake_files.collector_id(self.data_dir)
        since = lake_files.last_mark(target, collector) if incremental else None
        with self.store.cursor() as cur:
            return lake_files.export(cur, target, collector, since)

    def publish_lake(self, lake: str | Path, interval: float = 60.0) -> None:
        """Keep the lake current: an incremental export every ``interval`` seconds."""
        import threading

        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    self.lake_export(lake, incremental=True)
                except Exception:  # keep publishing; the next round retries
                    log.exception("lake export to %s failed", lake)

        thread = threading.Thread(target=loop, name="seamline-lake", daemon=True)
        thread.start()
        self._stoppers.append(stop.set)

