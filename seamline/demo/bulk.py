"""A large synthetic world for benchmarks, generated with NumPy and loaded in bulk.

:func:`generate` draws ``events`` Segment-shaped events (about 6 per person, so 10M events
give about 1.7M persons) from a Markov chain over touchpoints in five channels, with the
identifiers real SDKs send: an app ``anonymousId`` and device id, a web ``anonymousId``,
``userId`` after an ``identify`` (with ``traits.email`` / ``traits.phone``), call-centre
events that know only the phone (``context.traits.phone``) and email events that know only
the address. Planted: after ``Card Activation Failed`` people phone the call centre far more
often than after other app events, and app version 5.2.0 drops at checkout.

Unlike :mod:`seamline.demo.generator` (a realistic simulation sent through the ingest
pipeline), this one skips the pipeline: :func:`seamline.store.bulk.load_world` appends the
Arrow table straight into the events table and writes the person map, computed here from
the identifiers (connected components over event -> identifier links, no guardrail can fire
in this world). Deterministic for a given ``(events, seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from seamline.identity.stitcher import person_id_for

EVENTS_PER_PERSON = 6.85  # events drawn per simulated person; ~5.9 per stitched person
_STOP = 0.5  # scales each state's chance to end the journey (sets events per person)
WINDOW_DAYS = 30

# (event or page/screen name, channel, type)
STATES: tuple[tuple[str | None, str, str], ...] = (
    ("App Opened", "mobile", "track"),                  # 0
    (None, "mobile", "identify"),                       # 1
    ("Login Succeeded", "mobile", "track"),             # 2
    ("Product Viewed", "mobile", "track"),              # 3
    ("Checkout Started", "mobile", "track"),            # 4
    ("Payment Submitted", "mobile", "track"),           # 5
    ("Order Completed", "mobile", "track"),             # 6
    ("Card Declined", "mobile", "track"),               # 7
    ("Card Activation Failed", "mobile", "track"),      # 8
    ("Card Activation Completed", "mobile", "track"),   # 9
    ("Accounts", "mobile", "screen"),                   # 10
    ("Home", "web", "page"),                            # 11
    ("Pricing", "web", "page"),                         # 12
    (None, "web", "identify"),                          # 13
    ("Product Viewed", "web", "track"),                 # 14
    ("Checkout Started", "web", "track"),               # 15
    ("Order Completed", "web", "track"),                # 16
    ("Call Started", "call_center", "track"),           # 17
    ("Call Ended", "call_center", "track"),             # 18
    ("Email Opened", "email", "track"),                 # 19
    ("Email Clicked", "email", "track"),                # 20
    ("Branch Visit", "store", "track"),                 # 21
)  # fmt: skip
END = len(STATES)
SOURCES: tuple[tuple[str, str, str], ...] = (
    ("bulk-app", "mobile", "digital"),
    ("bulk-web", "web", "digital"),
    ("bulk-calls", "call_center", "operations"),
    ("bulk-email", "email", "marketing"),
    ("bulk-branches", "store", "retail"),
)
CHANNEL_SOURCE = {channel: name for name, channel, _ in SOURCES}
APP_VERSIONS = ("5.3.0", "5.2.0", "5.1.3")
FUNNEL = ("App Opened", "Product Viewed", "Checkout Started", "Payment Submitted",
          "Order Completed")  # fmt: skip

# transition weights per state (to state: weight); the rest of each row ends the journey
_T: dict[int, dict[int, float]] = {
    0: {1: 0.10, 3: 0.35, 8: 0.05, 9: 0.05, 10: 0.25, 0: 0.05, 19: 0.02, 17: 0.02},
    1: {2: 1.0},
    2: {3: 0.4, 10: 0.3, 8: 0.1, 9: 0.1, 0: 0.05},
    3: {4: 0.45, 3: 0.15, 10: 0.15, 0: 0.1, 11: 0.03},
    4: {5: 0.7, 3: 0.1, 17: 0.02},
    5: {6: 0.75, 7: 0.15, 17: 0.01},
    6: {0: 0.25, 19: 0.15, 10: 0.2, 21: 0.02},
    7: {5: 0.4, 17: 0.15, 0: 0.1},
    8: {17: 0.35, 8: 0.25, 9: 0.2, 0: 0.1},
    9: {10: 0.4, 3: 0.3, 0: 0.1, 17: 0.02},
    10: {3: 0.3, 10: 0.2, 0: 0.2, 8: 0.02, 9: 0.04, 17: 0.03},
    11: {12: 0.4, 14: 0.3, 13: 0.08, 0: 0.05},
    12: {14: 0.4, 13: 0.1, 11: 0.1},
    13: {14: 0.6, 12: 0.2},
    14: {15: 0.35, 14: 0.2, 11: 0.1, 17: 0.02},
    15: {16: 0.55, 14: 0.1, 17: 0.04},
    16: {19: 0.3, 11: 0.2, 0: 0.1},
    17: {18: 0.95},
    18: {0: 0.3, 11: 0.1, 19: 0.1},
    19: {20: 0.35, 0: 0.2, 11: 0.1},
    20: {11: 0.6, 0: 0.3},
    21: {0: 0.4, 11: 0.1},
}


def _matrix(identified: bool) -> NDArray[np.float64]:
    """Cumulative transition probabilities (rows: states, columns: states + END)."""
    matrix = np.zeros((END, END + 1))
    for state, row in _T.items():
        for target, weight in row.items():
            # anonymous people stay on one surface: no identify, call, email or branch
            if not identified and (STATES[target][2] == "identify"
                                   or STATES[target][1] in ("call_center", "email", "store")
                                   or STATES[target][1] != STATES[state][1]):  # fmt: skip
                continue
            matrix[state, target] = weight
        matrix[state, END] = _STOP * max(0.0, 1.0 - matrix[state, :END].sum())
    return np.cumsum(matrix / matrix.sum(axis=1, keepdims=True), axis=1)


def _gap_seconds(rng: np.random.Generator, source: NDArray[np.int64], target: NDArray[np.int64],
                 ) -> NDArray[np.float64]:  # fmt: skip
    channel = np.array([s[1] for s in STATES], dtype=object)
    cross = channel[source] != channel[target]
    gap = rng.lognormal(np.log(25.0), 0.9, len(source))  # within a session: seconds
    new_session = (target == 0) | (target == 11)
    gap = np.where(new_session, rng.exponential(2 * 86400.0, len(source)), gap)
    gap = np.where(cross & ~new_session, rng.uniform(180.0, 3000.0, len(source)), gap)
    to_email = np.array([s[1] == "email" for s in STATES])[target] & (source != 19)
    gap = np.where(to_email, rng.exponential(6 * 3600.0, len(source)), gap)
    return gap + 0.001


@dataclass
class World:
    table: pa.Table  # columns named like the events table (plus helper columns)
    persons: int  # simulated people (stitched persons: see the person map)
    person_of_event: NDArray[np.int64]  # component per event (dense)


def generate(events: int = 10_000_000, seed: int = 42, now: datetime | None = None) -> World:
    """Draw about ``events`` events; exact sizes depend on the chain."""
    rng = np.random.default_rng(seed)
    people = max(1, int(events / EVENTS_PER_PERSON))
    identified = rng.random(people) < 0.40
    app_user = rng.random(people) < np.where(identified, 0.85, 0.55)
    start_state = np.where(app_user, 0, 11)
    cumulative = np.stack([_matrix(False), _matrix(True)])
    max_len = 80
    states = np.full((max_len, people), END, dtype=np.int16)
    states[0] = start_state
    current = start_state.astype(np.int64)
    alive = np.ones(people, dtype=bool)
    kind = identified.astype(np.int64)
    for step in range(1, max_len):
        rows = cumulative[kind[alive], current[alive]]
        draws = rng.random(int(alive.sum()))
        nxt = (rows < draws[:, None]).sum(axis=1)
        current[alive] = nxt
        alive_now = alive.copy()
        alive_now[alive] = nxt != END
        states[step, alive_now] = nxt[nxt != END]
        alive = alive_now
        if not alive.any():
            break
    present = states != END
    lengths = present.sum(axis=0)
    # flatten person-major: person p's events in order
    state = states.T[present.T].astype(np.int64)
    person = np.repeat(np.arange(people, dtype=np.int64), lengths)
    n = len(state)
    first = np.concatenate(([True], person[1:] != person[:-1]))
    previous = np.concatenate(([0], state[:-1]))
    gaps = _gap_seconds(rng, previous, state)
    gaps[first] = 0.0
    offsets = np.cumsum(gaps)
    base = offsets[first][np.cumsum(first) - 1]
    start = rng.uniform(0, WINDOW_DAYS * 86400.0, people)[person]
    seconds = start + (offsets - base)
    end = (now or datetime(2026, 11, 20)).replace(tzinfo=None, microsecond=0)
    origin = end - timedelta(days=WINDOW_DAYS)
    ts_us = (np.datetime64(origin, "us").astype(np.int64)
             + (seconds * 1e6).astype(np.int64))  # fmt: skip
    keep = ts_us <= np.datetime64(end, "us").astype(np.int64)  # journeys still in progress
    state, person, ts_us = state[keep], person[keep], ts_us[keep]
    n = len(state)

    channel_of = np.array([s[1] for s in STATES], dtype=object)
    type_of = np.array([s[2] for s in STATES], dtype=object)
    name_of = np.array([s[0] for s in STATES], dtype=object)
    channel = channel_of[state]
    is_identify = type_of[state] == "identify"
    # user id from the person's first identify on (branch visits always know it)
    idx = np.arange(n)
    boundary = np.concatenate(([True], person[1:] != person[:-1]))
    first_row = np.flatnonzero(boundary)
    seen_identify = np.minimum.reduceat(np.where(is_identify, idx, n), first_row)[
        np.cumsum(boundary) - 1]
    logged_in = (idx >= seen_identify) | (channel == "store")
    mobile, web = channel == "mobile", channel == "web"
    calls, email = channel == "call_center", channel == "email"
    version = rng.choice(3, people, p=[0.5, 0.3, 0.2])[person]
    android = (rng.random(people) < 0.55)[person]

    # planted: checkout on 5.2.0 loses payments
    broken = mobile & (version == 1) & (state == 5) & (rng.random(n) < 0.5)
    state = np.where(broken, 7, state)

    def ids(prefix: str, values: NDArray[np.int64]) -> pa.Array:
        return pc.binary_join_element_wise(prefix, pc.cast(pa.array(values), pa.string()), "")

    anon_app = ids("a-", person)
    anon_web = ids("w-", person)
    phone = pc.binary_join_element_wise(
        "+447", pc.utf8_lpad(pc.cast(pa.array(400_000_000 + person), pa.string()), 9, "0"), "")
    mail = ids("p", person)
    mail = pc.binary_join_element_wise(mail, "@mail.example", "")
    user = ids("u-", person)
    device = ids("d-", person)

    def pick(mask: NDArray[np.bool_], values: pa.Array) -> pa.Array:
        return pc.if_else(pa.array(mask), values, pa.scalar(None, pa.string()))

    anonymous = pc.if_else(pa.array(mobile), anon_app, pc.if_else(
        pa.array(web), anon_web, pc.if_else(
            pa.array(calls), pc.binary_join_element_wise("phone:", phone, ""),
            pc.if_else(pa.array(email), pc.binary_join_element_wise("email:", mail, ""),
                       pa.scalar(None, pa.string())))))  # fmt: skip
    traits = pc.if_else(
        pa.array(is_identify),
        pc.binary_join_element_wise('{"email":"', mail, '","phone":"', phone, '"}', ""),
        pa.scalar(None, pa.string()),
    )
    context = pc.if_else(
        pa.array(calls), pc.binary_join_element_wise('{"traits":{"phone":"', phone, '"}}', ""),
        pc.if_else(pa.array(email),
                   pc.binary_join_element_wise('{"traits":{"email":"', mail, '"}}', ""),
                   pa.scalar('{"library":{"name":"bulk"}}')))  # fmt: skip
    names = name_of[state]
    no_name = np.full(n, None, dtype=object)
    event_col = pa.array(np.where(type_of[state] == "track", names, no_name).tolist(),
                         pa.string())  # fmt: skip
    name_col = pa.array(np.where(np.isin(type_of[state], ("page", "screen")), names,
                                 no_name).tolist(), pa.string())  # fmt: skip
    # page and screen names are the event column too (as the ingest pipeline stores them)
    event_col = pc.coalesce(event_col, name_col)
    app_version = np.array(APP_VERSIONS, dtype=object)[version]
    os_name = np.where(android, "Android", "iOS")

    # the person map: connected components of event -> identifier links
    columns = {
        "user_id": pick(logged_in & ~calls & ~email, user),
        "anonymous_id": anonymous,
        "device_id": pick(mobile, device),
        "email": pick(is_identify | email, mail),
        "phone": pick(is_identify | calls, phone),
    }
    links: list[NDArray[np.int64]] = []
    cols: list[NDArray[np.int64]] = []
    offset = n
    for values in columns.values():
        encoded = values.dictionary_encode()
        valid = np.asarray(encoded.is_valid())
        codes = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        links.append(idx[valid])
        cols.append(codes[valid] + offset)
        offset += len(encoded.dictionary)
    r, c = np.concatenate(links), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(offset, offset))
    _, labels = connected_components(graph, directed=False)
    component = labels[:n]
    _, dense = np.unique(component, return_inverse=True)

    type_col = pa.array(type_of[state].tolist(), pa.string())
    table = pa.table({
        "message_id": ids("bulk-", idx),
        "type": type_col,
        "event": event_col,
        "name": name_col,
        "user_id": columns["user_id"],
        "anonymous_id": anonymous,
        "channel": pa.array(channel.tolist(), pa.string()),
        "timestamp": pa.array(ts_us, pa.timestamp("us")),
        "os_name": pick(mobile, pa.array(os_name.tolist(), pa.string())),
        "app_version": pick(mobile, pa.array(app_version.tolist(), pa.string())),
        "device_id": columns["device_id"],
        "traits": traits,
        "context": context,
        "component": pa.array(dense),
    })  # fmt: skip
    return World(table, people, dense)


def person_ids(table: pa.Table) -> pa.Array:
    """A person id per event: seeded, like the stitcher's, by the component's first
    identifier (its device or anonymous id, else its user id)."""
    component = table.column("component").to_numpy()
    first = np.unique(component, return_index=True)[1]
    seeds = []
    anonymous = table.column("anonymous_id").take(pa.array(first)).to_pylist()
    users = table.column("user_id").take(pa.array(first)).to_pylist()
    for anon, user in zip(anonymous, users, strict=True):
        seeds.append(person_id_for(("anonymous_id", anon) if anon else ("user_id", user)))
    return pa.array(seeds, pa.string()).take(pa.array(component))
