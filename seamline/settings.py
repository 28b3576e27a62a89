"""Settings as data: one table drives the defaults, environment variables and docs.

Each setting can be set by its environment variable (``SEAMLINE_<NAME>``) or in
``<data dir>/settings.json``; the environment wins. ``tests/test_settings.py``
checks that every setting is documented in the README.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from seamline.errors import BadRequest, did_you_mean


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    bounds: tuple[int, int] | None = None  # inclusive, for whole numbers

    @property
    def env(self) -> str:
        return "SEAMLINE_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("max_event_bytes", 32 * 1024 + 1600, "Largest single event in bytes (32 KB + 5% slack)."),
    Setting("max_request_bytes", 500 * 1024 + 25 * 1024, "Largest request body after gunzip (500 KB + 5%)."),
    Setting("max_batch_events", 2500, "Most events accepted in one batch request."),
    Setting("queue_max_events", 200_000, "Events waiting for the writer before ingest answers 503."),
    Setting("queue_max_wait_ms", 500,
            "Longest expected queue wait (queued events / commit rate) before HTTP ingest answers 503."),
    Setting("parse_processes", 2,
            "Worker processes `serve` decodes and validates ingest bodies in (0: in the server process)."),
    Setting("parse_nice", 10,
            "Niceness the parse workers add (0-19): the writer thread gets the CPU first (0: equal).",
            bounds=(0, 19)),
    Setting("group_commit_events", 5000, "Most events the writer commits in one transaction."),
    Setting("group_commit_wait_ms", 2, "How long the writer waits to fill a group before committing."),
    Setting("retry_after_seconds", 2, "Retry-After sent with 503 answers (a 429 says when its key may send)."),
    Setting("ingest_rate_limit", 0,
            "Events a second each write key may send before it gets 429 (token bucket; 0: off)."),
    Setting("ingest_rate_burst", 0,
            "Events a write key may send at once above its rate (0: one second's worth)."),
    Setting("skew_flag_seconds", 600, "Flag skew-corrected events whose sentAt is older than this."),
    Setting(
        "public_host", "", "Host:port the settings endpoint tells SDKs to send to (default: Host)."
    ),
    Setting(
        "public_protocol", "", "Protocol the settings endpoint tells SDKs (default: the request's)."
    ),
    Setting("trusted_proxies", "", "Comma-separated client addresses whose X-Forwarded-For is trusted."),
    Setting("cors_origins", "*", "Origins allowed to send from browsers ('*' echoes the Origin)."),
    Setting(
        "checkpoint_threshold", "256MB",
        "WAL size that starts DuckDB's automatic checkpoint ('' keeps DuckDB's 16MB).",
    ),
    Setting("shutdown_timeout_seconds", 8, "Seconds SIGTERM waits for in-flight requests before draining."),
    Setting("phone_region", "US", "Region for phone numbers written without a country code."),
    Setting(
        "identity_caps", "", "Per-person identifier caps, e.g. 'email=5,anonymous_id=50' (per week)."
    ),
    Setting("identity_max_component", 200, "Most identifiers one person may hold; more is refused."),
    Setting("identity_blocked_values", "", "Extra placeholder ids that never link, comma-separated."),
    Setting(
        "outcome_events",
        "Order Completed,Loan Approved,Card Activation Completed,Payment Succeeded",
        "Outcome events (comma-separated) that `outcomes` counts as success.",
    ),
    Setting(
        "costly_events",
        "",
        "Costly contact events, comma-separated (default: every call_center and store event).",
    ),
    Setting(
        "allow_destinations",
        "",
        "CIDR ranges moments may send to although private or loopback (metadata never).",
    ),
    Setting("moments_grace_seconds", 30, "Extra wait after an unless window for late events."),
    Setting("moments_poll_ms", 250, "How often the moments scheduler and outbox look for work (idle: up to every 2 s)."),
    Setting("moments_retry_base_ms", 5000, "First retry delay of a failed delivery (x4 each)."),
    Setting("moments_max_attempts", 12, "Attempts before a delivery is dead-lettered (failed)."),
    Setting("moments_delivery_timeout_seconds", 15, "Timeout of one webhook attempt."),
    Setting("moments_breaker_failures", 5, "Failures in a row that open a host's circuit."),
    Setting("moments_breaker_seconds", 30, "How long an open circuit waits (doubles, max 10 min)."),
    Setting("moments_timezone", "UTC", "Time zone for quiet hours when a person has none."),
    Setting("moments_location_consent_trait", "location_consent",
            "Identify trait that, when false, opts a person out of location moments."),
    Setting("moments_location_consent_revoked_event", "Location Consent Revoked",
            "Event that opts a person out of location moments."),
    Setting("moments_location_consent_granted_event", "Location Consent Granted",
            "Event that opts a person back in to location moments."),
    Setting("moments_vapid_private_key", "",
            "VAPID private key (PEM or base64url DER) that signs web push deliveries."),
    Setting("moments_vapid_subject", "",
            "VAPID 'sub' claim: mailto: or https: contact for web push."),
    Setting(
        "moments_trigger_max_age_seconds",
        3600,
        "Triggers that arrive later than this after they happened start no moment.",
    ),
    # the Spark engine over a Parquet lake (seamline.store.spark)
    Setting("spark_master", "local[*]",
            "Spark master of --engine spark: local[N], spark://, yarn, k8s://, sc:// (Connect)."),
    # dashboard accounts and sessions (seamline.accounts, seamline.web.access)
    Setting("password_min_length", 12, "Shortest password an account may set."),
    Setting("invite_expiry_hours", 72, "Hours an account invite link stays valid."),
    Setting("sign_in_max_failures", 5, "Failed sign-ins in a row that lock an account."),
    Setting("sign_in_lockout_seconds", 900, "How long a locked account stays locked."),
    Setting("sign_in_ip_max_failures", 50, "Failed sign-ins from one address before it is throttled."),
    Setting("sign_in_ip_window_seconds", 900, "Window of the per-address sign-in throttle."),
    Setting("session_idle_seconds", 8 * 3600, "Dashboard sessions end after this long without a request."),
    Setting("session_lifetime_seconds", 24 * 3600, "Dashboard sessions end this long after sign-in."),
    Setting("result_cache_entries", 64, "Analysis results kept for the dashboard and API (LRU; 0: off)."),
    Setting("result_cache_seconds", 600, "Oldest a cached analysis result may be, even with no writes."),
    Setting("result_cache_rows_mb", 256, "Memory for sorted event rows shared between analyses (0: off)."),
    Setting("precompute_seconds", 30, "Least seconds between background recomputes of the dashboard (0: off)."),
    Setting("analytics_snapshot", 1,
            "Keep every event sorted in memory per data version for fast analyses (0: off)."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    max_event_bytes: int = _BY_NAME["max_event_bytes"].default
    max_request_bytes: int = _BY_NAME["max_request_bytes"].default
    max_batch_events: int = _BY_NAME["max_batch_events"].default
    queue_max_events: int = _BY_NAME["queue_max_events"].default
    queue_max_wait_ms: int = _BY_NAME["queue_max_wait_ms"].default
    parse_processes: int = _BY_NAME["parse_processes"].default
    parse_nice: int = _BY_NAME["parse_nice"].default
    group_commit_events: int = _BY_NAME["group_commit_events"].default
    group_commit_wait_ms: int = _BY_NAME["group_commit_wait_ms"].default
    retry_after_seconds: int = _BY_NAME["retry_after_seconds"].default
    ingest_rate_limit: int = _BY_NAME["ingest_rate_limit"].default
    ingest_rate_burst: int = _BY_NAME["ingest_rate_burst"].default
    skew_flag_seconds: int = _BY_NAME["skew_flag_seconds"].default
    public_host: str = _BY_NAME["public_host"].default
    public_protocol: str = _BY_NAME["public_protocol"].default
    trusted_proxies: str = _BY_NAME["trusted_proxies"].default
    cors_origins: str = _BY_NAME["cors_origins"].default
    checkpoint_threshold: str = _BY_NAME["checkpoint_threshold"].default
    shutdown_timeout_seconds: int = _BY_NAME["shutdown_timeout_seconds"].default
    phone_region: str = _BY_NAME["phone_region"].default
    identity_caps: str = _BY_NAME["identity_caps"].default
    identity_max_component: int = _BY_NAME["identity_max_component"].default
    identity_blocked_values: str = _BY_NAME["identity_blocked_values"].default
    outcome_events: str = _BY_NAME["outcome_events"].default
    costly_events: str = _BY_NAME["costly_events"].default
    allow_destinations: str = _BY_NAME["allow_destinations"].default
    moments_grace_seconds: int = _BY_NAME["moments_grace_seconds"].default
    moments_poll_ms: int = _BY_NAME["moments_poll_ms"].default
    moments_retry_base_ms: int = _BY_NAME["moments_retry_base_ms"].default
    moments_max_attempts: int = _BY_NAME["moments_max_attempts"].default
    moments_delivery_timeout_seconds: int = _BY_NAME["moments_delivery_timeout_seconds"].default
    moments_breaker_failures: int = _BY_NAME["moments_breaker_failures"].default
    moments_breaker_seconds: int = _BY_NAME["moments_breaker_seconds"].default
    moments_timezone: str = _BY_NAME["moments_timezone"].default
    moments_location_consent_trait: str = _BY_NAME["moments_location_consent_trait"].default
    moments_location_consent_revoked_event: str = _BY_NAME[
        "moments_location_consent_revoked_event"].default
    moments_location_consent_granted_event: str = _BY_NAME[
        "moments_location_consent_granted_event"].default
    moments_vapid_private_key: str = _BY_NAME["moments_vapid_private_key"].default
    moments_vapid_subject: str = _BY_NAME["moments_vapid_subject"].default
    moments_trigger_max_age_seconds: int = _BY_NAME["moments_trigger_max_age_seconds"].default
    spark_master: str = _BY_NAME["spark_master"].default
    password_min_length: int = _BY_NAME["password_min_length"].default
    invite_expiry_hours: int = _BY_NAME["invite_expiry_hours"].default
    sign_in_max_failures: int = _BY_NAME["sign_in_max_failures"].default
    sign_in_lockout_seconds: int = _BY_NAME["sign_in_lockout_seconds"].default
    sign_in_ip_max_failures: int = _BY_NAME["sign_in_ip_max_failures"].default
    sign_in_ip_window_seconds: int = _BY_NAME["sign_in_ip_window_seconds"].default
    session_idle_seconds: int = _BY_NAME["session_idle_seconds"].default
    session_lifetime_seconds: int = _BY_NAME["session_lifetime_seconds"].default
    result_cache_entries: int = _BY_NAME["result_cache_entries"].default
    result_cache_seconds: int = _BY_NAME["result_cache_seconds"].default
    result_cache_rows_mb: int = _BY_NAME["result_cache_rows_mb"].default
    precompute_seconds: int = _BY_NAME["precompute_seconds"].default
    analytics_snapshot: int = _BY_NAME["analytics_snapshot"].default
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def load(cls, data_dir: Path | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``settings.json`` in the data dir, then env vars, then overrides."""
        values: dict[str, Any] = {}
        if data_dir is not None and (data_dir / "settings.json").exists():
            try:
                values.update(json.loads((data_dir / "settings.json").read_text()))
            except json.JSONDecodeError as exc:
                raise BadRequest(f"{data_dir / 'settings.json'} is not valid JSON: {exc}") from exc
        for setting in SETTINGS:
            if setting.env in os.environ:
                values[setting.name] = os.environ[setting.env]
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)} - {"extra"}
        for name in values:
            if name not in known:
                raise BadRequest(f"Unknown setting '{name}'.{did_you_mean(name, known)}")
        return cls(**{name: _coerce(name, value) for name, value in values.items()})


def _coerce(name: str, value: Any) -> Any:
    setting = _BY_NAME[name]
    if isinstance(setting.default, int) and not isinstance(value, int):
        try:
            value = int(value)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"Setting '{name}' must be a whole number, got {value!r}.") from exc
    if setting.bounds is not None:
        low, high = setting.bounds
        if not low <= value <= high:
            raise BadRequest(f"Setting '{name}' must be between {low} and {high}, got {value!r}.")
    return value
