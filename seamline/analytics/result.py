"""Result objects: the JSON contract, plus pandas and Arrow views of the main table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:  # pandas is imported when used: it costs ~0.5 s at every start
    import pandas as pd


@dataclass
class Result:
    """An analysis result. ``to_dict()`` is the JSON contract of the CLI and the API."""

    data: dict[str, Any]
    table_key: str  # the list in ``data`` that is the result's main table

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def to_json(self) -> str:
        return json.dumps(self.data, default=str)

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.data[self.table_key]
        return rows

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows())

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.rows())

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.rows())} {self.table_key})"


class FunnelResult(Result):
    def to_pandas(self) -> pd.DataFrame:
        """Steps as rows; with a breakdown, one row per (breakdown value, step)."""
        import pandas as pd

        frame = pd.DataFrame(self.rows())
        breakdown = self.data.get("breakdown")
        if not breakdown:
            return frame
        parts = [pd.DataFrame(steps).assign(breakdown=value) for value, steps in breakdown.items()]
        return pd.concat(parts, ignore_index=True)

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_pandas(self.to_pandas(), preserve_index=False)


class JourneyResult(Result):
    pass


class PathResult(Result):
    def to_pandas(self) -> pd.DataFrame:
        """One row per path: the path as a list, its text (``A → B → C``), people, share."""
        import pandas as pd

        frame = pd.DataFrame(self.rows(), columns=["path", "people", "share"])
        frame.insert(1, "path_text", [" → ".join(map(str, path)) for path in frame["path"]])
        return frame

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows())


class RetentionResult(Result):
    def to_pandas(self) -> pd.DataFrame:
        """One row per (cohort, period offset): people, retained, rate, observed."""
        import pandas as pd

        rows = [
            {"cohort": cohort["cohort"], "people": cohort["people"], "offset": offset,
             "retained": retained, "rate": rate,
             "observed": offset < cohort["periods_observed"]}
            for cohort in self.rows()
            for offset, (retained, rate) in enumerate(
                zip(cohort["retained"], cohort["rates"], strict=True))
        ]  # fmt: skip
        columns = ["cohort", "people", "offset", "retained", "rate", "observed"]
        return pd.DataFrame(rows, columns=columns)

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_pandas(self.to_pandas(), preserve_index=False)


class OutcomeResult(Result):
    def to_pandas(self) -> pd.DataFrame:
        """One row per period (the same columns when there are none)."""
        import pandas as pd

        columns = ["period", "people", "converted", "outcome_rate", "median_seconds_to_outcome",
                   "p90_seconds_to_outcome", "contacts", "contacts_per_person", "contained",
                   "containment"]  # fmt: skip
        return pd.DataFrame(self.rows(), columns=columns)

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_pandas(self.to_pandas(), preserve_index=False)
