"""The identity rebuild on Spark: connected components over the lake's identifiers.

The same rules as the DuckDB rebuild (:func:`seamline.store.identity.rebuild`), as
DataFrames: identifiers are read from every lake event (user, anonymous, device ids, alias
previous ids, and the normalised ``contact_email`` / ``contact_phone`` columns; only events
exported before those columns existed have their email and phone re-derived from the JSON,
phones through libphonenumber), placeholders are dropped, each event
links its identifiers as a star from its highest-priority identifier, a device or
contact key seen with two user ids is a shared *hub* that links nobody, and two user
ids never link directly. Components are found by min-label propagation with pointer
jumping (each round: take the smallest label of any neighbour, then the label of that
label), checkpointed every round so the plan stays short; each component is labelled by
its smallest ``type:value`` node, as in DuckDB, so the person maps compare one to one.
The report compares the components with the lake's person map (``identities``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from seamline.store.spark import SparkEngine

#: Rounds after which the propagation gives up (a chain of 2**40 nodes would need more).
MAX_ROUNDS = 40


def _json(column: str, path: str) -> Column:
    from pyspark.sql import functions as F

    return F.get_json_object(F.col(column), path)


def observations(events: DataFrame, blocked: list[str],
                 normalise_phone: Callable[[str], str | None]) -> DataFrame:  # fmt: skip
    """``(ev, t, v)``: every identifier each event carries, normalised and filtered."""
    from pyspark.sql import functions as F

    identify = F.col("type") == "identify"
    if {"contact_email", "contact_phone"} <= set(events.columns):
        # stored normalised (seamline.store.contacts): the JSON is read only for events
        # exported before the columns existed, or whose value was invalid (null)
        stored_email, stored_phone = F.col("contact_email"), F.col("contact_phone")
    else:
        stored_email = stored_phone = F.lit(None).cast("string")
    src = events.select(
        F.concat_ws("\x00", "source", "message_id").alias("ev"),
        "type", "user_id", "anonymous_id", "device_id", "previous_id",
        stored_email.alias("stored_email"), stored_phone.alias("stored_phone"),
        F.when(stored_email.isNull(), F.when(identify, F.coalesce(
            _json("traits", "$.email"), _json("context", "$.traits.email")))
            .otherwise(_json("context", "$.traits.email"))).alias("email"),
        F.when(stored_phone.isNull(), F.when(identify, F.coalesce(
            _json("traits", "$.phone"), _json("context", "$.traits.phone")))
            .otherwise(_json("context", "$.traits.phone"))).alias("phone"),
    )  # fmt: skip
    email = F.trim(F.col("email"))
    parts = [
        src.where(F.col("user_id").isNotNull())
        .select("ev", F.lit("user_id").alias("t"), F.trim("user_id").alias("v")),
        src.where(F.col("anonymous_id").isNotNull())
        .select("ev", F.lit("anonymous_id").alias("t"), F.trim("anonymous_id").alias("v")),
        src.where(F.col("device_id").isNotNull())
        .select("ev", F.lit("device_id").alias("t"), F.trim("device_id").alias("v")),
        src.where(F.col("email").isNotNull() & (F.locate("@", email) > 1)
                  & ~email.endswith("@"))
        .select("ev", F.lit("email").alias("t"), F.lower(email).alias("v")),
        src.where(F.col("phone").isNotNull())
        .select("ev", F.lit("phone").alias("t"), F.col("phone").alias("v")),
        src.where(F.col("stored_email").isNotNull())
        .select("ev", F.lit("email").alias("t"), F.col("stored_email").alias("v")),
        src.where(F.col("stored_phone").isNotNull())  # E.164 already: no libphonenumber
        .select("ev", F.lit("e164").alias("t"), F.col("stored_phone").alias("v")),
        src.where((F.col("type") == "alias") & F.col("previous_id").isNotNull())
        .select("ev", F.lit("previous_id").alias("t"), F.trim("previous_id").alias("v")),
    ]  # fmt: skip
    raw = parts[0]
    for part in parts[1:]:
        raw = raw.unionByName(part)
    # E.164 needs libphonenumber: normalise the distinct raw phone numbers in Python workers
    schema = "raw string, e164 string"

    def to_e164(batches: Any) -> Any:
        for batch in batches:
            values = batch.column(0).to_pylist()
            yield pa.record_batch([pa.array(values, pa.string()),
                                   pa.array([normalise_phone(v) for v in values], pa.string())],
                                  names=["raw", "e164"])  # fmt: skip

    phones = (raw.where(F.col("t") == "phone").select(F.col("v").alias("raw")).distinct()
              .mapInArrow(to_e164, schema))  # fmt: skip
    normalised = (
        raw.join(phones, (raw.t == "phone") & (raw.v == phones.raw), "left")
        .select("ev", F.when(F.col("t") == "e164", F.lit("phone")).otherwise(F.col("t"))
                .alias("t"),
                F.when(F.col("t") == "phone", F.col("e164")).otherwise(F.col("v")).alias("v"))
    )  # fmt: skip
    folded = F.expr("lower(trim(BOTH '\"\\'' FROM trim(v)))")
    placeholder = folded.isin(*blocked) if blocked else F.lit(False)
    kept = normalised.where(F.col("v").isNotNull() & (F.col("v") != "")
                            & ~(placeholder | folded.rlike(r"\A[0\-]*\z")))  # fmt: skip
    users = kept.where(F.col("t") == "user_id").select(F.col("v").alias("_user")).distinct()
    return (
        kept.join(users, (kept.t == "previous_id") & (kept.v == users._user), "left")
        .select("ev", F.when(F.col("t") != "previous_id", F.col("t"))
                .when(F.col("_user").isNotNull(), F.lit("user_id"))
                .otherwise(F.lit("anonymous_id")).alias("t"), "v")
    )  # fmt: skip


def components(nodes: DataFrame, edges: DataFrame) -> DataFrame:
    """``(node, comp)``: the smallest node of each node's component (undirected ``a``-``b``)."""
    from pyspark.sql import functions as F

    labels = nodes.select("node", F.col("node").alias("comp")).localCheckpoint()
    edges = edges.select("a", "b").localCheckpoint()
    for _ in range(MAX_ROUNDS):
        offered = edges.join(labels, edges.a == labels.node).select(
            F.col("b").alias("node"), F.col("comp"))  # fmt: skip
        hooked = labels.unionByName(offered).groupBy("node").agg(F.min("comp").alias("comp"))
        parent = hooked.select(F.col("node").alias("_p"), F.col("comp").alias("_pc"))
        jumped = (hooked.join(parent, hooked.comp == parent._p, "left")
                  .select("node", F.least("comp", F.coalesce("_pc", "comp")).alias("comp"))
                  .localCheckpoint())  # fmt: skip
        before = labels.select("node", F.col("comp").alias("_old"))
        changed = jumped.join(before, "node").where(F.col("comp") != F.col("_old")).limit(1)
        labels = jumped
        if changed.count() == 0:
            return labels
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def rebuild(engine: SparkEngine, blocked: list[str],
            normalise_phone: Callable[[str], str | None],
            id_priority: dict[str, int]) -> tuple[dict[str, Any], DataFrame]:  # fmt: skip
    """The report of :func:`seamline.store.identity.rebuild`, and the ``(node, comp)`` map."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    obs = observations(engine.events, blocked, normalise_phone).localCheckpoint()
    node = F.concat_ws(":", "t", "v")
    nodes = obs.select(node.alias("node"), "t").distinct()
    priority = F.lit(len(id_priority))
    for id_type, rank in sorted(id_priority.items(), key=lambda kv: -kv[1]):
        priority = F.when(F.col("t") == id_type, F.lit(rank)).otherwise(priority)
    ranked = obs.select("ev", "t", node.alias("node"), F.row_number().over(
        Window.partitionBy("ev").orderBy(priority, F.col("v"))).alias("rk"))  # fmt: skip
    first, rest = ranked.where("rk = 1").alias("x"), ranked.where("rk > 1").alias("y")
    edge = first.join(rest, "ev").select(
        F.col("x.node").alias("a"), F.col("y.node").alias("b"),
        F.col("x.t").alias("ta"), F.col("y.t").alias("tb"),
    ).distinct().localCheckpoint()  # fmt: skip
    both = edge.select(F.col("a").alias("x"), F.col("tb").alias("ty"), F.col("b").alias("y"),
                       F.col("ta").alias("tx")).unionByName(
        edge.select(F.col("b").alias("x"), F.col("ta").alias("ty"), F.col("a").alias("y"),
                    F.col("tb").alias("tx")))  # fmt: skip
    hubs = (both.where((F.col("tx") != "user_id") & (F.col("ty") == "user_id"))
            .groupBy("x").agg(F.countDistinct("y").alias("n")).where("n > 1")
            .select(F.col("x").alias("node")).localCheckpoint())  # fmt: skip
    linking = edge.where(~((F.col("ta") == "user_id") & (F.col("tb") == "user_id")))
    hub_a = hubs.select(F.col("node").alias("_hub_a"))
    hub_b = hubs.select(F.col("node").alias("_hub_b"))
    linking = (linking.join(hub_a, F.col("a") == F.col("_hub_a"), "left_anti")
               .join(hub_b, F.col("b") == F.col("_hub_b"), "left_anti"))  # fmt: skip
    sym = linking.select("a", "b").unionByName(linking.select(F.col("b").alias("a"),
                                                              F.col("a").alias("b"))).distinct()
    cc = components(nodes.join(hubs, "node", "left_anti"), sym)

    live = (engine.frame("identities")
            .select(F.concat_ws(":", "id_type", "id_value").alias("node"), "person_id")
            .distinct())  # fmt: skip
    joined = cc.join(live, "node")
    split = joined.groupBy("comp").agg(F.countDistinct("person_id").alias("n")).where("n > 1")
    merged_only = joined.groupBy("person_id").agg(F.countDistinct("comp").alias("n")).where("n > 1")
    examples = (joined.groupBy("comp").agg(F.sort_array(F.collect_set("person_id")).alias("p"))
                .where(F.size("p") > 1).orderBy("comp").limit(5).collect())  # fmt: skip
    several_users = (cc.join(nodes, "node").where(F.col("t") == "user_id").groupBy("comp")
                     .count().where("count > 1"))  # fmt: skip
    split_count, merged_count = split.count(), merged_only.count()
    report = {
        "identifiers": nodes.count(),
        "components": cc.select("comp").distinct().count(),
        "hubs": hubs.count(),
        "split_in_incremental": split_count,
        "merged_in_incremental_only": merged_count,
        "not_in_incremental": cc.join(live.select("node"), "node", "left_anti").count(),
        "components_with_several_user_ids": several_users.count(),
        "agrees": split_count == 0 and merged_count == 0,
        "examples": [{"component": r["comp"], "persons": list(r["p"])} for r in examples],
    }
    return report, cc
