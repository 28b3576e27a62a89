"""Which metrics matter: score candidate engagement metrics against a business outcome.

Method (the README's "Which metrics matter" states it for users):

- **Anchor and windows.** Each person's anchor is their first touchpoint (track, page or
  screen call) in the date range. Metrics are measured over ``[anchor, anchor + observe)``;
  the outcome is looked for in ``[anchor + observe, anchor + observe + predict)`` (for
  ``retention:D``: ``[anchor + D days, anchor + D days + predict)``). Only persons whose whole
  outcome window has passed at ``as_of`` are *eligible*; the others are not scored.
- **Split.** Eligible persons are split by a hash of their person id: ``crc32(person_id)
  mod 10000 < holdout * 10000`` is held out. The training part only picks each metric's
  direction (does more of it go with the outcome, or less?); every reported figure but
  sensitivity comes from the held-out part, so a direction is never scored on the persons
  that chose it.
- **Predictive validity.** AUC (Mann-Whitney U / (n_pos n_neg), ties half) of the metric,
  in its chosen direction, for the outcome on the held-out persons, with a 95% Hanley-McNeil
  interval; Spearman's rank correlation (signed, raw direction) as a second figure.
- **Sensitivity.** Eligible persons grouped by the ISO week of their anchor (weeks with at
  least 5 persons, at least 3 weeks): Pearson correlation between the week's mean metric
  and the week's outcome rate (signed, raw direction).
- **Stability.** Spearman correlation, across eligible persons, of the metric measured over
  the first half of the observation window and over the second half (week 1 vs week 2 with
  the default 14 days).
- **Inflatability.** A *repeat* is an event the same person did with the same name within
  ``repeat_within`` (10 s) before: a double tap, a reload, a fast A-B-A-B loop. Inflatability
  = 1 - (metric total over eligible persons without repeats) / (total with them), clipped to
  [0, 1]: the share of the metric that repeats alone make. Sessions and active days cannot
  be inflated this way (a repeat never starts a session or a day), so they score 0.
- **Verdict.** ``predictive``: the AUC interval's lower bound is above 0.55. ``vanity``: the
  interval contains 0.5 (no evidence it predicts) and the metric is easy to inflate
  (inflatability >= 0.2) or its AUC is below 0.55. ``weak``: the rest (some signal, not
  enough). ``insufficient_data``: fewer than 10 held-out persons with, or without, the
  outcome, or the metric is the same for everyone. Metrics are ranked by the interval's
  lower bound, then the AUC.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from seamline.analytics.definitions import DateRange
from seamline.analytics.durations import format_duration
from seamline.analytics.metric_definitions import SESSION_GAP, MetricsDefinition, metrics_query
from seamline.analytics.periods import period_index, period_label
from seamline.analytics.result import Result
from seamline.analytics.sequences import bool_column, dictionary, distinct, from_table
from seamline.analytics.validity import auc, hanley_mcneil, pearson, spearman
from seamline.events.timestamps import utcnow

if TYPE_CHECKING:
    import pandas as pd

    from seamline.store.engine import Engine

_US = 1_000_000
_DAY_US = 86_400 * _US
_HASH_BUCKETS = 10_000

#: Documented thresholds of the verdicts (also in every result's ``method``).
PREDICTIVE_CI_LOW = 0.55
VANITY_INFLATABILITY = 0.2
VANITY_AUC = 0.55
MIN_CLASS = 10
MIN_WEEK_PEOPLE = 5
MIN_WEEKS = 3

Array = NDArray[np.float64]


class MetricsScoreResult(Result):
    """``to_dict()``: the JSON of ``seamline metrics score``; ``to_pandas()``: a row per metric."""

    COLUMNS = ("rank", "metric", "label", "verdict", "auc", "ci_low", "ci_high", "direction",
               "spearman", "sensitivity", "sensitivity_weeks", "stability", "inflatability",
               "mean", "median", "reason")  # fmt: skip

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=list(self.COLUMNS))

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_pandas(self.to_pandas(), preserve_index=False)


def _us(value: timedelta) -> int:
    return value // timedelta(microseconds=1)


def _span(value: timedelta) -> str:
    """``14d`` rather than ``2w``: windows are read in days."""
    if value and value % timedelta(days=1) == timedelta(0):
        return f"{value // timedelta(days=1)}d"
    return format_duration(value) if value else "0d"


class _Rows:
    """The sorted event rows as arrays, and the per-person measurements over a row mask."""

    def __init__(self, table: pa.Table, definition: MetricsDefinition):
        seq = from_table(table, keep_ids=True)
        self.definition = definition
        self.person, self.ts, self.ids = seq.person, seq.ts, seq.person_ids
        self.n = len(self.ids)
        heads = np.flatnonzero(np.concatenate(([True], self.person[1:] != self.person[:-1])))
        self.anchor = self.ts[heads] if self.n else np.zeros(0, dtype=np.int64)
        self.since = self.ts - self.anchor[self.person]  # µs since the person's anchor
        self.is_screen = bool_column(table, "is_screen")
        self.is_open = bool_column(table, "is_open")
        self.is_outcome = bool_column(table, "is_outcome")
        self.is_costly = bool_column(table, "is_costly")
        self.named: dict[int, Array] = {}
        for index, spec in enumerate(definition.metrics):
            if spec.kind == "event":
                self.named[index] = bool_column(table, f"m{index}").astype(np.float64)
            elif spec.kind == "property":
                column = table.column(f"m{index}").cast(pa.float64())
                self.named[index] = column.to_numpy(zero_copy_only=False).astype(np.float64)
        self.codes = dictionary(table, "event")[0] if len(table) else np.zeros(0, np.int64)

    def repeats(self, window: timedelta) -> NDArray[np.bool_]:
        """Rows whose person did the same event name at most ``window`` before."""
        order = np.lexsort((self.ts, self.codes, self.person))
        p, c, t = self.person[order], self.codes[order], self.ts[order]
        again = (p[1:] == p[:-1]) & (c[1:] == c[:-1]) & (t[1:] - t[:-1] <= _us(window))
        repeat = np.zeros(len(order), dtype=bool)
        repeat[order[1:][again]] = True
        return repeat

    def measure(self, mask: NDArray[np.bool_]) -> Array:
        """Every metric per person (rows: metrics, columns: persons) over the masked rows."""
        n = self.n
        rows = np.flatnonzero(mask)
        p, t = self.person[rows], self.ts[rows]
        new_person = np.concatenate(([True], p[1:] != p[:-1])) if len(p) else np.zeros(0, bool)
        gap = np.concatenate(([False], np.diff(t) > _us(SESSION_GAP))) if len(t) else new_person
        sessions = np.bincount(p, weights=new_person | gap, minlength=n)
        screens = np.bincount(p, weights=self.is_screen[rows], minlength=n)
        days = t // _DAY_US
        if len(days):
            width = int(days.max() - days.min()) + 1
            pairs = distinct(p * width + (days - days.min()))  # np.unique: a slow hash table
            active_days = np.bincount(pairs // width, minlength=n).astype(np.float64)
        else:
            active_days = np.zeros(n)
        built_in = {
            "sessions": sessions,
            "screens_per_session": np.divide(screens, sessions, out=np.zeros(n),
                                             where=sessions > 0),
            "active_days": active_days,
            "app_opens": np.bincount(p, weights=self.is_open[rows], minlength=n),
            "events": np.bincount(p, minlength=n).astype(np.float64),
        }  # fmt: skip
        values = np.zeros((len(self.definition.metrics), n))
        for index, spec in enumerate(self.definition.metrics):
            if spec.kind == "builtin":
                values[index] = built_in[spec.key]
                continue
            column = self.named[index][rows]
            present = ~np.isnan(column)
            total = np.bincount(p, weights=np.where(present, column, 0.0), minlength=n)
            if spec.aggregate == "mean":
                count = np.bincount(p, weights=present, minlength=n)
                total = np.divide(total, count, out=np.zeros(n), where=count > 0)
            values[index] = total
        return values


def _held_out(ids: list[str], share: float) -> NDArray[np.bool_]:
    """The deterministic split: crc32 of the person id (UTF-8) in the first ``share`` buckets."""
    hashes = np.fromiter((zlib.crc32(pid.encode()) for pid in ids), dtype=np.int64,
                         count=len(ids))  # fmt: skip
    return (hashes % _HASH_BUCKETS) < round(share * _HASH_BUCKETS)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def _verdict(area: float | None, ci_low: float | None, inflatability: float,
             n_pos: int, n_neg: int, constant: bool) -> tuple[str, str]:  # fmt: skip
    if constant:
        return "insufficient_data", "The metric has the same value for every eligible person."
    if area is None or ci_low is None or min(n_pos, n_neg) < MIN_CLASS:
        return "insufficient_data", (f"Fewer than {MIN_CLASS} held-out persons with, or "
                                     "without, the outcome.")  # fmt: skip
    if ci_low > PREDICTIVE_CI_LOW:
        return "predictive", (f"Held-out AUC {area:.2f}; its 95% interval starts above "
                              f"{PREDICTIVE_CI_LOW}.")  # fmt: skip
    if ci_low <= 0.5 and (inflatability >= VANITY_INFLATABILITY or area < VANITY_AUC):
        why = (f"{inflatability:.0%} of it is repeats within seconds"
               if inflatability >= VANITY_INFLATABILITY else f"its AUC is only {area:.2f}")
        return "vanity", f"No evidence it predicts the outcome (interval contains 0.5), and {why}."
    return "weak", f"Held-out AUC {area:.2f}: some signal, not enough to steer by."


def run_metrics_score(table: pa.Table, definition: MetricsDefinition,
                      as_of: datetime) -> MetricsScoreResult:  # fmt: skip
    rows = _Rows(table, definition)
    as_of_us = (as_of - datetime(1970, 1, 1)) // timedelta(microseconds=1)
    observe, start, end = (_us(definition.observe), _us(definition.outcome_start),
                           _us(definition.outcome_end))  # fmt: skip
    since, person, n = rows.since, rows.person, rows.n

    in_window = (since >= start) & (since < end)
    kind = definition.outcome.kind
    if kind == "events":
        outcome = np.bincount(person[in_window & rows.is_outcome], minlength=n) > 0
    elif kind == "retention":
        outcome = np.bincount(person[in_window], minlength=n) > 0
    else:
        outcome = np.bincount(person[in_window & rows.is_costly], minlength=n) == 0

    observed = since < observe
    full = rows.measure(observed)
    without_repeats = rows.measure(observed & ~rows.repeats(definition.repeat_within))
    first = rows.measure(observed & (since < observe // 2))
    second = rows.measure(observed & (since >= observe // 2))

    eligible = np.flatnonzero(rows.anchor + end <= as_of_us)
    y = outcome[eligible]
    held = _held_out([rows.ids[i] for i in eligible], definition.holdout)
    train, test = ~held, held
    n_pos, n_neg = int(y[test].sum()), int((~y[test]).sum())
    weeks, week_of = np.unique(period_index(rows.anchor[eligible], "week"), return_inverse=True)
    week_size = np.bincount(week_of, minlength=len(weeks))
    week_rate = np.bincount(week_of, weights=y, minlength=len(weeks)) / np.maximum(week_size, 1)
    big_weeks = week_size >= MIN_WEEK_PEOPLE

    scored: list[dict[str, Any]] = []
    for index, spec in enumerate(definition.metrics):
        values = full[index, eligible]
        train_auc = auc(values[train], y[train])
        lower_is_better = train_auc is not None and train_auc < 0.5
        area = auc(values[test], y[test])
        if area is not None and lower_is_better:
            area = 1.0 - area
        ci_low, ci_high = hanley_mcneil(area, n_pos, n_neg) if area is not None else (None, None)
        total = float(values.sum())
        inflatability = 0.0
        if total > 0:
            inflatability = float(np.clip(1 - without_repeats[index, eligible].sum() / total, 0, 1))
        week_sum = np.bincount(week_of, weights=values, minlength=len(weeks))
        week_mean: Array = week_sum / np.maximum(week_size, 1)
        sensitivity = None
        if big_weeks.sum() >= MIN_WEEKS:
            sensitivity = pearson(week_mean[big_weeks], week_rate[big_weeks])
        constant = len(values) > 0 and bool(np.all(values == values[0]))
        verdict, reason = _verdict(area, ci_low, inflatability, n_pos, n_neg, constant)
        scored.append({
            "metric": spec.key, "label": spec.label, "verdict": verdict,
            "auc": _round(area), "ci_low": _round(ci_low), "ci_high": _round(ci_high),
            "direction": "lower" if lower_is_better else "higher",
            "spearman": _round(spearman(values[test], y[test].astype(np.float64))),
            "sensitivity": _round(sensitivity), "sensitivity_weeks": int(big_weeks.sum()),
            "stability": _round(spearman(first[index, eligible], second[index, eligible])),
            "inflatability": _round(inflatability),
            "mean": _round(float(values.mean())) if len(values) else None,
            "median": _round(float(np.median(values))) if len(values) else None,
            "reason": reason,
        })  # fmt: skip
    scored.sort(key=lambda m: (m["verdict"] == "insufficient_data", m["ci_low"] is None,
                               -(m["ci_low"] or 0), -(m["auc"] or 0), m["metric"]))  # fmt: skip
    for rank, metric in enumerate(scored, start=1):
        metric["rank"] = rank

    notes = []
    if len(eligible) < 100:
        notes.append(
            f"Only {len(eligible)} persons' outcome windows ({_span(definition.outcome_end)} "
            "after their first touchpoint) had ended by as_of; shorter windows (e.g. observe "
            "7d, predict 14d) or more history admit more."
        )
    positives = int(y.sum())
    if len(eligible) and positives in (0, len(eligible)):
        reached = "no" if positives == 0 else "every"
        notes.append(f"{reached.capitalize()} eligible person reached the outcome "
                     f"'{definition.outcome.label}' in their outcome window, so nothing can "
                     "predict it; check the outcome's name and the windows.")  # fmt: skip
    return MetricsScoreResult(
        {
            "outcome": {"kind": kind, "label": definition.outcome.label,
                        "events": list(definition.outcome.events),
                        "days": definition.outcome.days or None},
            "observe": _span(definition.observe),
            "predict": _span(definition.predict),
            "outcome_window": [_span(definition.outcome_start), _span(definition.outcome_end)],
            "as_of": as_of.isoformat(),
            "people": n, "eligible": len(eligible), "converted": positives,
            "outcome_rate": _round(positives / len(eligible)) if len(eligible) else None,
            "training": int(train.sum()), "held_out": int(test.sum()),
            "held_out_converted": n_pos,
            "split": f"crc32(person_id) % {_HASH_BUCKETS} < "
                     f"{round(definition.holdout * _HASH_BUCKETS)} is held out",
            "weeks": [{"week": period_label(int(w), "week"), "people": int(size),
                       "outcome_rate": _round(rate)}
                      for w, size, rate in zip(weeks, week_size, week_rate, strict=True)],
            "method": {
                "auc": "Mann-Whitney on held-out persons, direction chosen on the training part",
                "interval": "Hanley-McNeil 95%",
                "predictive_ci_low_above": PREDICTIVE_CI_LOW,
                "vanity_inflatability_at_least": VANITY_INFLATABILITY,
                "vanity_auc_below": VANITY_AUC,
                "min_per_class": MIN_CLASS,
                "repeat_within_seconds": definition.repeat_within.total_seconds(),
                "session_gap_minutes": SESSION_GAP.total_seconds() / 60,
            },
            "metrics": scored,
            "notes": notes,
        },
        "metrics",
    )  # fmt: skip


def score_metrics(
    engine: Engine,
    declared: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]],
    outcome: str | None = None,
    metrics: list[str] | tuple[str, ...] | None = None,
    observe: str | timedelta = "14d",
    predict: str | timedelta = "30d",
    *,
    holdout: float = 0.5,
    builtins: bool = True,
    start: datetime | None = None,
    end: datetime | None = None,
) -> MetricsScoreResult:
    """Build the definition, run its query on ``engine`` and score (see the module doc).

    ``declared`` is (outcome events, costly events, costly channels) of the workspace.
    """
    outcomes, costly_events, costly_channels = declared
    definition = MetricsDefinition.build(
        outcomes, costly_events, costly_channels, outcome, metrics, builtins, observe, predict,
        holdout, DateRange(start, end),
    )  # fmt: skip
    table = engine.query_arrow(metrics_query(definition, dialect=engine.dialect))
    return run_metrics_score(table, definition, as_of=end or utcnow())
