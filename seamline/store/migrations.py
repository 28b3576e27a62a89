"""Versioned schema migrations. Append new ones; never edit an applied one.

All times are naive UTC ``TIMESTAMP`` values. The events table's primary key is a
128-bit hash of ``(source_id, message_id)``: dedupe happens inside the same
transaction as the append, and an integer key keeps the index fast.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from seamline.identity.identifiers import IdentityRules
from seamline.store import accounts, contacts, identity, moments, places

#: SQL text, or a function of (connection, identity rules) for a migration that needs Python
Step = str | Callable[[duckdb.DuckDBPyConnection, IdentityRules], None]

MIGRATIONS: tuple[tuple[int, str, Step], ...] = (
    (
        1,
        "collect: sources, tokens, events, failed events, counters",
        """
        CREATE TABLE sources (
            source_id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL UNIQUE,
            channel VARCHAR NOT NULL,
            unit VARCHAR,
            write_key VARCHAR NOT NULL UNIQUE,
            enabled BOOLEAN NOT NULL DEFAULT TRUE,
            created_at TIMESTAMP NOT NULL
        );
        CREATE TABLE tokens (
            token_id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            scope VARCHAR NOT NULL,
            token_hash VARCHAR NOT NULL UNIQUE,
            hint VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            revoked BOOLEAN NOT NULL DEFAULT FALSE
        );
        CREATE TABLE events (
            dedup_key UHUGEINT PRIMARY KEY,
            message_id VARCHAR NOT NULL,
            source_id VARCHAR NOT NULL,
            type VARCHAR NOT NULL,
            event VARCHAR,
            name VARCHAR,
            category VARCHAR,
            user_id VARCHAR,
            anonymous_id VARCHAR,
            group_id VARCHAR,
            previous_id VARCHAR,
            person_id VARCHAR,
            channel VARCHAR,
            unit VARCHAR,
            timestamp TIMESTAMP NOT NULL,
            original_timestamp TIMESTAMP,
            sent_at TIMESTAMP,
            received_at TIMESTAMP NOT NULL,
            os_name VARCHAR,
            os_version VARCHAR,
            app_name VARCHAR,
            app_version VARCHAR,
            app_build VARCHAR,
            device_id VARCHAR,
            device_type VARCHAR,
            device_model VARCHAR,
            library_name VARCHAR,
            library_version VARCHAR,
            locale VARCHAR,
            timezone VARCHAR,
            ip VARCHAR,
            user_agent VARCHAR,
            properties JSON,
            traits JSON,
            context JSON,
            integrations JSON,
            metadata JSON,
            skew_flag BOOLEAN,
            retry_count INTEGER
        );
        CREATE TABLE failed_events (
            source_id VARCHAR,
            message_id VARCHAR,
            reason VARCHAR NOT NULL,
            field VARCHAR,
            message VARCHAR NOT NULL,
            raw VARCHAR NOT NULL,
            received_at TIMESTAMP NOT NULL
        );
        CREATE TABLE counters (
            name VARCHAR PRIMARY KEY,
            value BIGINT NOT NULL
        );
        INSERT INTO counters VALUES ('dropped_unknown_key', 0), ('dropped_suppressed', 0);
        """,
    ),
    (2, "identity: persons, identities, merges, overrides, refusals, hubs, suppressions",
     identity.MIGRATION),
    (
        3,
        "moments: rules, rule versions, trigger instances, delivery outbox, counters",
        moments.MIGRATION,
    ),
    (4, "accounts: dashboard accounts, recovery codes, audit log", accounts.MIGRATION),
    (5, "moments: workspace places and per-person place state (location moments)",
     places.MIGRATION),
    (6, "events: contact_email and contact_phone columns (normalised), filled from the JSON",
     contacts.migrate),
)
