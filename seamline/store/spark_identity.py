"""The identity rebuild on Spark: connected components over the lake's identifiers.

The same rules as the DuckDB rebuild (:func:`seamline.store.identity.rebuild`), as
DataFrames: identifiers are read from every lake event (user, anonymous, device ids, alias
previous ids, and the normalised ``contact_email`` / ``contact_phone`` columns; only events
exported before those columns existed have their email and phone re-derived from the JSON,
phones through libphonenumber), placeholders are dropped, each event links its identifiers
as a star from its highest-priority identifier, a device or contact key seen with two user
ids is a shared *hub* that links nobody, and two user ids never link directly. Each
component is labelled by its smallest ``type:value`` node, as in DuckDB, so the person maps
compare one to one. The report compares the components with the lake's person map
(``identities``).

How it stays cheap on Spark, where every job costs a fixed scheduling overhead:

* one pass over the events builds each event's identifiers and its star edges within the
  row (the centre is ``least()`` of the identifier structs: no shuffle by event, and no
  lambdas, which Spark interprets row by row); only the rare values that need a look-up
  elsewhere in the lake (a raw JSON phone for libphonenumber, an alias ``previous_id`` that
  may be a user id) are gathered first, and joined back only when there are any;
* the nodes are coded once as longs in ``type:value`` order (a global sort, then
  ``monotonically_increasing_id``, which increases along the sorted partitions), so the
  smallest code of a component *is* its smallest string; the components run on
  ``(long, long)`` edges and the strings come back in one join at the end;
* components by min-label hooking *of trees*: each node takes the smallest label among its
  neighbours, and offers it to its current label too (so a whole tree re-hooks at once),
  then one pointer jump. A chain of *n* nodes labelled in any order converges in about
  ``log2(n)`` rounds, where plain label propagation needs up to *n*. Each round is two
  checkpointed jobs plus one count of the changed labels;
* the report is two jobs (materialise, aggregate) over the joined (node, component,
  incremental persons) table, where the DuckDB-shaped version ran eight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from seamline.store.spark import SparkEngine

log = logging.getLogger(__name__)

#: Rounds after which the components give up (about log2 of the longest chain is needed).
MAX_ROUNDS = 60
#: Look-up tables (raw phones, alias previous ids) up to this many rows are broadcast.
BROADCAST_ROWS = 500_000


@contextmanager
def _stage(name: str, timings: dict[str, float] | None) -> Iterator[None]:
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + seconds
    log.debug("identity rebuild on Spark: %s in %.2f s", name, seconds)


def _json(column: str, path: str) -> Column:
    from pyspark.sql import functions as F

    return F.get_json_object(F.col(column), path)


def _contact_json(name: str, stored: Column) -> Column:
    """The raw ``email`` / ``phone`` trait of an event whose stored contact column is null.

    The JSON is parsed only when its text names the key (seamline writes JSON with msgspec,
    which never escapes ASCII letters, so a key ``email`` always appears as text)."""
    from pyspark.sql import functions as F

    identify = F.col("type") == "identify"
    in_traits = identify & F.col("traits").contains(name)
    in_context = F.col("context").contains(name)
    from_context = _json("context", f"$.traits.{name}")
    value = F.when(in_traits, F.coalesce(_json("traits", f"$.{name}"), from_context)).when(
        in_context, from_context)  # fmt: skip
    return F.when(stored.isNull(), value)


def _events(engine: SparkEngine) -> DataFrame:
    """The identifier columns of every event, contacts re-derived from JSON where needed."""
    from pyspark.sql import functions as F

    events = engine.events
    if {"contact_email", "contact_phone"} <= set(events.columns):
        # stored normalised (seamline.store.contacts): the JSON is read only for events
        # exported before the columns existed, or whose value was invalid (null)
        stored_email, stored_phone = F.col("contact_email"), F.col("contact_phone")
    else:
        stored_email = stored_phone = F.lit(None).cast("string")
    email = F.trim(_contact_json("email", stored_email))
    return events.select(
        F.trim("user_id").alias("user"), F.trim("anonymous_id").alias("anon"),
        F.trim("device_id").alias("device"),
        F.when((F.col("type") == "alias"), F.trim("previous_id")).alias("prev"),
        stored_email.alias("stored_email"), stored_phone.alias("stored_phone"),
        F.when((F.locate("@", email) > 1) & ~email.endswith("@"), F.lower(email))
        .alias("json_email"),
        _contact_json("phone", stored_phone).alias("raw_phone"),
    )  # fmt: skip


def _lookups(engine: SparkEngine, src: DataFrame,
             normalise_phone: Callable[[str], str | None]) -> DataFrame:  # fmt: skip
    """``src`` with ``json_phone`` (E.164 of ``raw_phone``) and ``prev_is_user`` (the alias
    ``previous_id`` is a user id somewhere in the lake). Both need values from other events,
    so they are joined; in a lake written with the contact columns and few aliases they are
    small or empty, and then no join runs at all."""
    from pyspark.sql import functions as F

    wanted = (src.where(F.col("raw_phone").isNotNull() | F.col("prev").isNotNull())
              .select(F.explode(F.array(
                  F.when(F.col("raw_phone").isNotNull(),
                         F.struct(F.lit("phone").alias("k"), F.col("raw_phone").alias("x"))),
                  F.when(F.col("prev").isNotNull(),
                         F.struct(F.lit("prev").alias("k"), F.col("prev").alias("x"))),
              )).alias("w")).where(F.col("w").isNotNull()).select("w.*").distinct()
              .localCheckpoint())  # fmt: skip
    counts = {row["k"]: row["n"] for row in wanted.groupBy("k").agg(F.count("*").alias("n"))
              .collect()}  # fmt: skip
    out = src
    if counts.get("phone"):
        schema = "raw string, e164 string"

        def to_e164(batches: Any) -> Any:
            for batch in batches:
                values = batch.column(0).to_pylist()
                yield pa.record_batch(
                    [pa.array(values, pa.string()),
                     pa.array([normalise_phone(v) for v in values], pa.string())],
                    names=["raw", "e164"])  # fmt: skip

        phones = (wanted.where(F.col("k") == "phone").select(F.col("x").alias("raw"))
                  .mapInArrow(to_e164, schema).localCheckpoint())  # fmt: skip
        if counts["phone"] <= BROADCAST_ROWS:
            phones = F.broadcast(phones)
        out = (out.join(phones, out.raw_phone == phones.raw, "left")
               .withColumn("json_phone", F.col("e164")).drop("raw", "e164"))  # fmt: skip
    else:
        out = out.withColumn("json_phone", F.lit(None).cast("string"))
    if counts.get("prev"):
        users = engine.events.select(F.trim("user_id").alias("_user")).where(
            F.col("_user").isNotNull())  # fmt: skip
        prevs = wanted.where(F.col("k") == "prev").select(F.col("x").alias("_prev"))
        # a placeholder previous id is dropped later whatever its type, so the users need
        # no placeholder filter here
        prev_users = prevs.join(users, prevs._prev == users._user, "left_semi").localCheckpoint()
        if counts["prev"] <= BROADCAST_ROWS:
            prev_users = F.broadcast(prev_users)
        out = (out.join(prev_users, out.prev == prev_users._prev, "left")
               .withColumn("prev_is_user", F.col("_prev").isNotNull()).drop("_prev"))  # fmt: skip
    else:
        out = out.withColumn("prev_is_user", F.lit(False))
    return out


def identifiers(engine: SparkEngine, blocked: list[str],
                normalise_phone: Callable[[str], str | None],
                id_priority: dict[str, int]) -> DataFrame:  # fmt: skip
    """``ids``: per event, an array of its kept identifiers as ``(pr, v, t)`` structs (null
    where the event has none of that kind), and ``centre``, the smallest by priority then
    value: the centre of the event's star. Plain expressions only: Spark interprets
    lambdas (``filter``, ``array_sort``) row by row, several times slower."""
    from pyspark.sql import functions as F

    src = _lookups(engine, _events(engine), normalise_phone)

    def rank(id_type: str) -> int:
        return id_priority.get(id_type, len(id_priority))

    def entry(t: str | Column, v: Column, rank_: int | Column) -> Column:
        folded = F.lower(F.trim(F.trim(v), F.lit("\"'")))
        placeholder = folded.isin(*blocked) if blocked else F.lit(False)
        kept = (v.isNotNull() & (v != "")
                & ~(placeholder | folded.rlike(r"\A[0\-]*\z")))  # fmt: skip
        t_col = F.lit(t) if isinstance(t, str) else t
        rank_col = F.lit(rank_) if isinstance(rank_, int) else rank_
        return F.when(kept, F.struct(rank_col.alias("pr"), v.alias("v"), t_col.alias("t")))

    prev_user = F.col("prev_is_user")
    entries = [
        entry("user_id", F.col("user"), rank("user_id")),
        entry("anonymous_id", F.col("anon"), rank("anonymous_id")),
        entry("device_id", F.col("device"), rank("device_id")),
        entry("email", F.col("json_email"), rank("email")),
        entry("phone", F.col("json_phone"), rank("phone")),
        entry("email", F.col("stored_email"), rank("email")),
        entry("phone", F.col("stored_phone"), rank("phone")),  # E.164 already
        entry(F.when(prev_user, F.lit("user_id")).otherwise(F.lit("anonymous_id")), F.col("prev"),
              F.when(prev_user, F.lit(rank("user_id"))).otherwise(F.lit(rank("anonymous_id")))),
    ]  # fmt: skip
    # least() of structs skips nulls and orders by (pr, v): DuckDB's row_number() = 1
    return src.select(F.array(*entries).alias("ids"), F.least(*entries).alias("centre")).where(
        F.col("centre").isNotNull())  # fmt: skip


def _node(x: Column) -> Column:
    from pyspark.sql import functions as F

    return F.concat(x["t"], F.lit(":"), x["v"])


def components(edges: DataFrame, partitions: int,
               timings: dict[str, float] | None = None) -> DataFrame:  # fmt: skip
    """``(node, comp)``: the smallest node of each node's component, for the nodes of the
    symmetric ``(a, b)`` long edges (a node with no edge is its own component).

    Hooking of trees: each round every node takes the smallest label among its own and its
    neighbours' (``m``), offers ``m`` to its current label as well (a label is a node of
    the same component, so its whole tree moves at once), then jumps to its label's
    label. Labels only decrease and stay inside the component; at the fixpoint neighbours
    agree, so each component holds its smallest node."""
    from pyspark.sql import functions as F

    edges = edges.select("a", "b").repartition(partitions, "a").localCheckpoint()
    labels = (edges.groupBy("a").agg(F.least(F.col("a"), F.min("b")).alias("comp"))
              .withColumnRenamed("a", "node").repartition(partitions, "node")
              .localCheckpoint())  # fmt: skip
    for round_ in range(1, MAX_ROUNDS + 1):
        with _stage("components rounds", timings):
            # m: the smallest of a node's own label and its neighbours' (one aggregate)
            offered = edges.join(labels, edges.a == labels.node).select(
                F.col("b").alias("node"), "comp", F.lit(None).cast("long").alias("old"))
            own = labels.select("node", "comp", F.col("comp").alias("old"))
            hooked = own.unionByName(offered).groupBy("node").agg(
                F.min("comp").alias("m"), F.max("old").alias("old"))
            # ... taken by the node and offered to its current label (exploded, so the
            # aggregate above runs once)
            offers = F.array(
                F.struct("node", "m", "old"),
                F.struct(F.col("old").alias("node"), "m", F.lit(None).cast("long").alias("old")))
            hooked = (hooked.select(F.explode(offers).alias("o")).select("o.*")
                      .groupBy("node").agg(F.min("m").alias("comp"), F.max("old").alias("old"))
                      .localCheckpoint())  # fmt: skip
            parent = hooked.select(F.col("node").alias("_p"), F.col("comp").alias("_pc"))
            jumped = (hooked.join(parent, hooked.comp == parent._p, "left")
                      .select("node", F.least("comp", F.coalesce("_pc", "comp")).alias("comp"),
                              "old")
                      .repartition(partitions, "node").localCheckpoint())  # fmt: skip
            changed = jumped.where(F.col("comp") != F.col("old")).count()
            labels = jumped.select("node", "comp")
        log.debug("identity rebuild on Spark: round %d, %d labels changed", round_, changed)
        if changed == 0:
            if timings is not None:
                timings["rounds"] = round_
            return labels
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def rebuild(engine: SparkEngine, blocked: list[str],
            normalise_phone: Callable[[str], str | None], id_priority: dict[str, int],
            timings: dict[str, float] | None = None,
            ) -> tuple[dict[str, Any], DataFrame]:  # fmt: skip
    """The report of :func:`seamline.store.identity.rebuild`, and the ``(node, comp)`` map.

    ``timings``, when given, receives the seconds of each stage (and the rounds)."""
    from pyspark.sql import functions as F

    spark = engine.spark
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions") or 8)
    with _stage("identifiers and star edges", timings):
        ids = identifiers(engine, blocked, normalise_phone, id_priority)
        # (centre, each identifier) per event: the star's edges, and (centre, centre), so
        # the nodes are the ends of these distinct pairs and the events are read once (a
        # node seen twice in an event pairs with the centre like DuckDB's rank > 1 does;
        # self-loops link nothing and are dropped from the links)
        pairs = (ids.select("centre", F.explode("ids").alias("y")).where(F.col("y").isNotNull())
                 .select(_node(F.col("centre")).alias("a"), F.col("centre.t").alias("ta"),
                         _node(F.col("y")).alias("b"), F.col("y.t").alias("tb"))
                 .distinct().localCheckpoint())  # fmt: skip
    with _stage("node codes", timings):
        nodes = pairs.select(F.col("b").alias("node"), F.col("tb").alias("t"))
        # ids increase along a global sort: the smallest code of a component is its smallest
        # node string, and the codes are compared instead of the strings from here on
        codes = (nodes.distinct().orderBy("node")
                 .select("node", (F.col("t") == "user_id").alias("is_user"),
                         F.monotonically_increasing_id().alias("id"))
                 .localCheckpoint())  # fmt: skip
        code_a = codes.select(F.col("node").alias("a"), F.col("id").alias("ia"),
                              F.col("is_user").alias("ua"))  # fmt: skip
        code_b = codes.select(F.col("node").alias("b"), F.col("id").alias("ib"),
                              F.col("is_user").alias("ub"))  # fmt: skip
        edges = (pairs.where(F.col("a") != F.col("b")).join(code_a, "a").join(code_b, "b")
                 .select(F.col("ia").alias("a"), F.col("ib").alias("b"), "ua", "ub")
                 .localCheckpoint())  # fmt: skip
    with _stage("hubs and links", timings):
        both = edges.select(F.col("a").alias("x"), F.col("ua").alias("ux"),
                            F.col("b").alias("y"), F.col("ub").alias("uy")).unionByName(
            edges.select(F.col("b").alias("x"), F.col("ub").alias("ux"),
                         F.col("a").alias("y"), F.col("ua").alias("uy")))  # fmt: skip
        hubs = (both.where(~F.col("ux") & F.col("uy")).groupBy("x")
                .agg(F.countDistinct("y").alias("n")).where("n > 1")
                .select(F.col("x").alias("hub")).localCheckpoint())  # fmt: skip
        hub_count = hubs.count()
        linking = edges.where(~(F.col("ua") & F.col("ub")))
        if hub_count:
            hub = F.broadcast(hubs) if hub_count <= BROADCAST_ROWS else hubs
            linking = (linking.join(hub, linking.a == hub.hub, "left_anti")
                       .join(hub, linking.b == hub.hub, "left_anti"))  # fmt: skip
        sym = linking.select("a", "b").unionByName(
            linking.select(F.col("b").alias("a"), F.col("a").alias("b"))).distinct()
    labels = components(sym, partitions, timings)
    with _stage("report", timings):
        cc = codes.join(labels.withColumnRenamed("node", "id"), "id", "left").select(
            "id", "node", "is_user", F.coalesce("comp", "id").alias("comp"))  # fmt: skip
        if hub_count:
            cc = cc.join(hubs, cc.id == hubs.hub, "left_anti")
        cc = cc.localCheckpoint()  # the person map below reads it too
        live = (engine.frame("identities")
                .select(F.concat_ws(":", "id_type", "id_value").alias("node"), "person_id")
                .groupBy("node").agg(F.collect_set("person_id").alias("persons")))  # fmt: skip
        # read by the two aggregates below: materialised once
        joined = cc.join(live, "node", "left").select("id", "comp", "is_user", "persons")
        joined = joined.localCheckpoint()
        per_comp = joined.groupBy("comp").agg(
            F.array_sort(F.array_distinct(F.flatten(F.collect_list("persons")))).alias("p"),
            F.sum(F.col("is_user").cast("int")).alias("users"),
            F.sum(F.col("persons").isNull().cast("int")).alias("missing"),
        )  # fmt: skip
        per_person = (joined.select("comp", F.explode("persons").alias("person"))
                      .groupBy("person").agg((F.min("comp") != F.max("comp")).alias("several")))
        comp_row = per_comp.agg(
            F.count("*").alias("components"),
            F.coalesce(F.sum((F.size("p") > 1).cast("int")), F.lit(0)).alias("split"),
            F.coalesce(F.sum((F.col("users") > 1).cast("int")), F.lit(0)).alias("several"),
            F.coalesce(F.sum("missing"), F.lit(0)).alias("missing"))  # fmt: skip
        person_row = per_person.agg(
            F.coalesce(F.sum(F.col("several").cast("int")), F.lit(0)).alias("merged"))
        row = comp_row.crossJoin(person_row).collect()[0]
        examples: list[Any] = []
        if row["split"]:
            comp_names = codes.select(F.col("id").alias("comp"), F.col("node").alias("name"))
            examples = (per_comp.where(F.size("p") > 1).orderBy("comp").limit(5)
                        .join(comp_names, "comp").orderBy("comp").collect())  # fmt: skip
        report = {
            "identifiers": codes.count(),
            "components": row["components"],
            "hubs": hub_count,
            "split_in_incremental": row["split"],
            "merged_in_incremental_only": row["merged"],
            "not_in_incremental": row["missing"],
            "components_with_several_user_ids": row["several"],
            "agrees": row["split"] == 0 and row["merged"] == 0,
            "examples": [{"component": r["name"], "persons": list(r["p"])} for r in examples],
        }
    comp_names = codes.select(F.col("id").alias("comp"), F.col("node").alias("_comp"))
    person_map = cc.join(comp_names, "comp").select("node", F.col("_comp").alias("comp"))
    return report, person_map
