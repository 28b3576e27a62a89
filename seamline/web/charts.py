"""Plotly figures for the dashboard, as plain dicts (plotly.js renders them in the browser).

Figures are built as data, not through ``plotly.graph_objects``: the shapes are few, and
skipping its validation keeps a page's first view fast. Channels keep one colour
everywhere (a colour-blind-safe palette); other lanes (business units) get one by name.
"""

from __future__ import annotations

import zlib
from typing import Any

from seamline.web.formatting import duration

Figure = dict[str, Any]

CHANNEL_COLOURS = {
    "mobile": "#0072B2",
    "web": "#E69F00",
    "server": "#6B6B6B",
    "call_center": "#D55E00",
    "email": "#009E73",
    "store": "#CC79A7",
    "sms": "#56B4E9",
    "push": "#B8A200",
    "chat": "#8C564B",
}
_SPARE = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB")
_FONT = {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13,
         "color": "#1f2328"}  # fmt: skip


def colour(lane: str | None) -> str:
    if lane in CHANNEL_COLOURS:
        return CHANNEL_COLOURS[lane]
    return _SPARE[zlib.crc32((lane or "").encode()) % len(_SPARE)]


def lane_colours(edges: list[dict[str, Any]], lane: str) -> dict[str, str]:
    """A colour per lane of a figure: channels keep theirs, other lanes (units) take the
    spare colours in order, so two units of one chart never share a colour (up to 7)."""
    names = sorted({e[f"{end}_{lane}"] or "" for e in edges for end in ("from", "to")})
    spare = iter(_SPARE * (len(names) // len(_SPARE) + 1))
    return {name: CHANNEL_COLOURS.get(name) or next(spare) for name in names}


def _alpha(hex_colour: str, alpha: float) -> str:
    red, green, blue = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def _layout(**extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "font": _FONT, "paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff",
        "margin": {"l": 56, "r": 24, "t": 16, "b": 48}, "hoverlabel": {"font": _FONT},
        "legend": {"orientation": "h", "y": -0.2},
    }  # fmt: skip
    layout.update(extra)
    return layout


Node = tuple[str, str]


def _ranks(edges: list[dict[str, Any]], starts: list[Node], lane: str) -> dict[Node, int]:
    """Steps from where most journeys start (breadth first), then from the other starts
    for what that did not reach; nodes never reached rank last."""
    following: dict[Node, list[Node]] = {}
    for edge in edges:  # most people first, as the journey map lists them
        following.setdefault((edge["from"], edge[f"from_{lane}"]), []).append(
            (edge["to"], edge[f"to_{lane}"])
        )
    rank: dict[Node, int] = {}
    for start in starts:  # most people first
        if start in rank:
            continue
        rank[start] = 0
        frontier = [start]
        while frontier:
            nxt = []
            for node in frontier:
                for target in following.get(node, ()):
                    if target not in rank:
                        rank[target] = rank[node] + 1
                        nxt.append(target)
            frontier = nxt
    return rank


def split_loops(edges: list[dict[str, Any]], lane: str = "channel",
                starts: list[dict[str, Any]] | None = None,
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """(forward edges, loops and back-edges): a Sankey reads well only without cycles.

    Edges that lead away from where journeys start (``starts`` of the journey map) are
    taken first, then the rest, most people first; an edge that would close a cycle (a
    retry, a return to an earlier touchpoint) goes to the second list, which the page
    shows as a table: the journey map keeps loops, the chart shows the forward flow.
    """
    entry = [(s["event"], s[lane]) for s in starts or []]
    rank = _ranks(edges, entry, lane)
    last = len(rank) + 1
    following: dict[Node, set[Node]] = {}

    def reaches(start: Node, goal: Node) -> bool:
        stack, seen = [start], {start}
        while stack:
            node = stack.pop()
            if node == goal:
                return True
            for nxt in following.get(node, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    def order(edge: dict[str, Any]) -> tuple[bool, int, int]:
        ahead = rank.get((edge["from"], edge[f"from_{lane}"]), last) < rank.get(
            (edge["to"], edge[f"to_{lane}"]), last
        )
        return (not ahead, -edge["people"], -edge["transitions"])

    forward, loops = [], []
    for edge in sorted(edges, key=order):
        source, target = (edge["from"], edge[f"from_{lane}"]), (edge["to"], edge[f"to_{lane}"])
        if reaches(target, source):
            loops.append(edge)
        else:
            following.setdefault(source, set()).add(target)
            forward.append(edge)
    loops.sort(key=lambda e: -e["people"])
    return forward, loops


def journey_sankey(edges: list[dict[str, Any]], lane: str = "channel",
                   hues: dict[str, str] | None = None) -> Figure:  # fmt: skip
    """Touchpoints (event in a lane) as nodes, forward transitions as links by people."""
    hues = hues or lane_colours(edges, lane)
    nodes: dict[tuple[str, str], int] = {}
    for edge in edges:
        for end in ("from", "to"):
            nodes.setdefault((edge[end], edge[f"{end}_{lane}"]), len(nodes))
    labels = [event for event, _ in nodes]
    lanes = [lane_name for _, lane_name in nodes]
    link: dict[str, list[Any]] = {"source": [], "target": [], "value": [], "color": [],
                                  "customdata": []}  # fmt: skip
    for edge in edges:
        link["source"].append(nodes[(edge["from"], edge[f"from_{lane}"])])
        link["target"].append(nodes[(edge["to"], edge[f"to_{lane}"])])
        link["value"].append(edge["people"])
        link["color"].append(_alpha(hues[edge[f"from_{lane}"] or ""], 0.35))
        link["customdata"].append([
            edge["people"], edge["transitions"], duration(edge["median_seconds"]),
            duration(edge["p90_seconds"]), edge[f"from_{lane}"], edge[f"to_{lane}"],
        ])  # fmt: skip
    trace = {
        "type": "sankey", "arrangement": "snap", "valueformat": ",d",
        "node": {"label": labels, "color": [hues[name or ""] for name in lanes],
                 "customdata": lanes, "pad": 18, "thickness": 14,
                 "line": {"color": "#ffffff", "width": 0.5},
                 "hovertemplate": "%{label} (%{customdata})<br>%{value:,d} people"
                                  "<extra></extra>"},
        "link": {**link, "hovertemplate":
                 "%{source.label} (%{customdata[4]}) → %{target.label} (%{customdata[5]})"
                 "<br>%{customdata[0]:,d} people, %{customdata[1]:,d} transitions"
                 "<br>hand-off median %{customdata[2]}, p90 %{customdata[3]}<extra></extra>"},
    }  # fmt: skip
    height = max(480, min(1600, 30 * len(nodes)))
    layout = _layout(height=height, margin={"l": 8, "r": 8, "t": 8, "b": 8})
    return {"data": [trace], "layout": layout}


def _funnel_trace(name: str, steps: list[dict[str, Any]], bar_colour: str) -> dict[str, Any]:
    conversion = [step["conversion"] * 100 for step in steps]
    return {
        "type": "bar", "name": name, "x": [step["step"] for step in steps], "y": conversion,
        "marker": {"color": bar_colour},
        "text": [f"{step['people']:,}" for step in steps],
        "textposition": "inside", "insidetextanchor": "start",
        "cliponaxis": False,
        "error_y": {"type": "data", "symmetric": False, "color": "#1f2328", "thickness": 1,
                    "array": [s["ci_high"] * 100 - c for s, c in zip(steps, conversion,
                                                                     strict=True)],
                    "arrayminus": [c - s["ci_low"] * 100 for s, c in zip(steps, conversion,
                                                                         strict=True)]},
        "customdata": [[s["people"], s["ci_low"] * 100, s["ci_high"] * 100] for s in steps],
        "hovertemplate": f"{name}<br>" + "%{x}: %{customdata[0]:,d} people<br>"
                         "conversion %{y:.1f}% "
                         "(95% CI %{customdata[1]:.1f}\u2013%{customdata[2]:.1f}%)<extra></extra>",
    }  # fmt: skip


def funnel_bars(result: dict[str, Any], max_values: int = 6) -> Figure:
    """Conversion of step 1 per step, Wilson interval as error bars, people as labels."""
    breakdown: dict[str, list[dict[str, Any]]] = result.get("breakdown") or {}
    if breakdown:
        shown = list(breakdown.items())[:max_values]
        traces = [_funnel_trace(value, steps, _SPARE[i % len(_SPARE)])
                  for i, (value, steps) in enumerate(shown)]  # fmt: skip
    else:
        traces = [_funnel_trace("all people", result["steps"], CHANNEL_COLOURS["mobile"])]
    layout = _layout(height=380, barmode="group", showlegend=bool(breakdown),
                     yaxis={"title": {"text": "converted of step 1 (%)"}, "range": [0, 110],
                            "gridcolor": "#e5e7eb"},
                     xaxis={"automargin": True})  # fmt: skip
    return {"data": traces, "layout": layout}


def outcome_lines(periods: list[dict[str, Any]]) -> Figure:
    """Outcome rate and containment (left, %) and costly contacts per person (right)."""
    x = [row["period"] for row in periods]

    def line(key: str, name: str, hue: str, axis: str = "y", scale: float = 100) -> dict:
        return {"type": "scatter", "mode": "lines+markers", "name": name, "x": x,
                "y": [row[key] * scale for row in periods], "yaxis": axis,
                "line": {"color": hue, "width": 2}}  # fmt: skip

    data = [
        line("outcome_rate", "outcome rate (%)", CHANNEL_COLOURS["mobile"]),
        line("containment", "contained (%)", CHANNEL_COLOURS["email"]),
        line("contacts_per_person", "costly contacts per person", CHANNEL_COLOURS["call_center"],
             "y2", 1),
    ]  # fmt: skip
    layout = _layout(
        height=340,
        yaxis={"title": {"text": "% of active people"}, "rangemode": "tozero",
               "gridcolor": "#e5e7eb"},
        yaxis2={"title": {"text": "contacts per person"}, "overlaying": "y", "side": "right",
                "rangemode": "tozero", "showgrid": False, "tickformat": ".2f"},
        margin={"l": 56, "r": 72, "t": 16, "b": 48},
    )  # fmt: skip
    return {"data": data, "layout": layout}


def person_timeline(events: list[dict[str, Any]]) -> Figure:
    """One marker per event, one row per channel: the cross-channel journey at a glance."""
    by_channel: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_channel.setdefault(event["channel"] or "(none)", []).append(event)
    data = [
        {"type": "scatter", "mode": "markers", "name": channel,
         "x": [e["timestamp"] for e in rows], "y": [channel] * len(rows),
         "text": [e["event"] or e["type"] for e in rows],
         "marker": {"color": colour(channel), "size": 10, "line": {"color": "#fff", "width": 1}},
         "hovertemplate": "%{text}<br>%{x}<extra>%{y}</extra>"}
        for channel, rows in by_channel.items()
    ]  # fmt: skip
    height = 120 + 40 * len(by_channel)
    return {
        "data": data,
        "layout": _layout(
            height=height,
            showlegend=False,
            yaxis={"automargin": True, "type": "category"},
            xaxis={"type": "date", "gridcolor": "#e5e7eb"},
        ),
    }


def path_bars(result: dict[str, Any]) -> Figure:
    """Top paths as horizontal bars (people), the most common on top; hover gives the share."""
    paths = list(reversed(result["paths"]))  # Plotly draws the first category at the bottom
    labels = [" → ".join(str(step) for step in p["path"]) for p in paths]
    trace = {
        "type": "bar", "orientation": "h", "x": [p["people"] for p in paths], "y": labels,
        "marker": {"color": CHANNEL_COLOURS["mobile"]},
        "text": [f"{p['people']:,} ({p['share'] * 100:.1f}%)" for p in paths],
        "textposition": "auto", "cliponaxis": False,
        "customdata": [p["share"] * 100 for p in paths],
        "hovertemplate": "%{y}<br>%{x:,d} people (%{customdata:.1f}% of those who did "
                         "the event)<extra></extra>",
    }  # fmt: skip
    layout = _layout(height=max(220, 90 + 34 * len(paths)), showlegend=False,
                     xaxis={"title": {"text": "people"}, "gridcolor": "#e5e7eb",
                            "rangemode": "tozero"},
                     yaxis={"automargin": True, "type": "category"},
                     margin={"l": 16, "r": 24, "t": 16, "b": 48})  # fmt: skip
    return {"data": [trace], "layout": layout}


def retention_heatmap(result: dict[str, Any]) -> Figure:
    """Cohorts (rows, oldest on top) by period offset (columns): share of the cohort that
    returned; offsets not observed yet are left blank rather than drawn as 0%."""
    cohorts = result["cohorts"]
    offsets = list(range(result["periods"]))
    z = [[rate * 100 if k < c["periods_observed"] else None for k, rate in enumerate(c["rates"])]
         for c in cohorts]  # fmt: skip
    text = [[f"{rate * 100:.0f}%" if k < c["periods_observed"] else ""
             for k, rate in enumerate(c["rates"])] for c in cohorts]  # fmt: skip
    unit = result["period"]
    trace = {
        "type": "heatmap", "x": [f"{unit} {k}" for k in offsets],
        "y": [f"{c['cohort']} ({c['people']:,})" for c in cohorts], "z": z,
        "text": text, "texttemplate": "%{text}", "zmin": 0, "zmax": 100,
        "colorscale": [[0, "#f7fbff"], [0.5, "#6baed6"], [1, "#08306b"]],
        "colorbar": {"title": {"text": "% returned"}, "ticksuffix": "%"},
        "customdata": [c["retained"] for c in cohorts],
        "hovertemplate": "cohort %{y}, %{x}: %{z:.1f}% returned "
                         "(%{customdata:,d} people)<extra></extra>",
        "xgap": 2, "ygap": 2,
    }  # fmt: skip
    layout = _layout(height=max(240, 110 + 30 * len(cohorts)),
                     yaxis={"automargin": True, "type": "category", "autorange": "reversed"},
                     xaxis={"side": "top", "type": "category"},
                     margin={"l": 16, "r": 24, "t": 40, "b": 16})  # fmt: skip
    return {"data": [trace], "layout": layout}
