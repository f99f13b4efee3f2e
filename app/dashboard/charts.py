"""The dashboard's charts (SPEC §7.2): ECharts options built with pyecharts from usage figures.

Only the options JSON of a pyecharts chart is used (`dump_options`): pyecharts' own HTML and
its remote script host never are. A page embeds each chart as
`<div class="chart" data-options="ID">` plus `<script type="application/json" id="ID">`, and
`static/app.js` draws it with the vendored ECharts.

Figures come from the usage read queries: hourly and daily series from the hourly roll-up,
5-hour windows from the stored requests of the window, gauges' upstream state from the latest
ledger sample. `overview_charts` is a template global the overview's
`dashboard/_overview_charts.html` calls.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import current_app
from pyecharts import options as opts
from pyecharts.charts import Bar, Gauge, Line, Pie

from app.dashboard import bp
from app.storage import queries, usage, usage_series
from app.storage.models import RateLimitSample
from app.storage.usage import WINDOW_HOURS, Group, UsageFilter, floor_hour, merge

HOUR = timedelta(hours=1)
OVERVIEW_HOURS = 24
MAX_SERIES = 8          # per chart; the rest is added up as "(other)"
TOP_TOOLS = 15
OTHER = "(other)"
GROUPINGS = (("domain", "Domain"), ("account_id", "Account"), ("model", "Model"))
TOKEN_KINDS = (("input_tokens", "Input"), ("output_tokens", "Output"),
               ("cache_creation_input_tokens", "Cache write"),
               ("cache_read_input_tokens", "Cache read"))
OK, WARN, BAD = "#16a34a", "#d97706", "#dc2626"
NO_LABEL = opts.LabelOpts(is_show=False)


# --- small helpers -------------------------------------------------------------------------

def options(chart: Any, **extra: Any) -> dict[str, Any]:
    """A pyecharts chart's ECharts options as JSON data, with `extra` top-level options."""
    data = json.loads(chart.dump_options())
    data.update(extra)
    return data


def name_of(column: str, value: Any) -> str:
    """How a key value is shown: an unknown account or model gets a name in brackets."""
    if value is None:
        return {"account_id": "(no account)", "model": "(unknown model)"}.get(column, "(none)")
    return str(value)


def total_tokens(counts: dict[str, Any]) -> int:
    return int(counts["input_tokens"] + counts["output_tokens"]
               + counts["cache_creation_input_tokens"] + counts["cache_read_input_tokens"])


def dollars(microusd: int) -> float:
    return round(microusd / 1_000_000, 6)


def _clock() -> datetime:
    return current_app.extensions["nexus.clock"]()


def _grid(**extra: Any) -> dict[str, Any]:
    return {"left": 12, "right": 16, "top": 40, "bottom": 8, "containLabel": True, **extra}


def _legend() -> opts.LegendOpts:
    return opts.LegendOpts(type_="scroll", pos_top=0, border_color="transparent")


def _ranked(groups: Iterable[Group], index: int) -> list[Any]:
    """The key values (at `index` of the group keys), busiest first: by tokens, then
    requests, then name."""
    merged = merge(groups, key=lambda group: group.key[index])
    return sorted(merged, key=lambda value: (-total_tokens(merged[value].counts),
                                             -merged[value].counts["request_count"],
                                             value is None, str(value or "")))


# --- time series ---------------------------------------------------------------------------

def series_by(groups: list[Group], column: str, buckets: list[Any],
              metric: Callable[[dict[str, Any]], float]) -> list[tuple[str, list[float]]]:
    """Groups keyed (bucket, value) as one series per value of `column` (the busiest
    MAX_SERIES - 1 values, the rest added up as OTHER), one point per bucket."""
    ranked = _ranked(groups, 1)
    shown = ranked if len(ranked) <= MAX_SERIES else ranked[:MAX_SERIES - 1]
    names = {value: name_of(column, value) for value in shown}
    position = {bucket: index for index, bucket in enumerate(buckets)}
    series: dict[str, list[float]] = {name: [0] * len(buckets) for name in names.values()}
    if len(shown) < len(ranked):
        series[OTHER] = [0] * len(buckets)
    for group in groups:
        bucket, value = group.key[0], group.key[1]
        if bucket in position:
            series[names.get(value, OTHER)][position[bucket]] += metric(group.counts)
    return list(series.items())


def stacked_bars(x: list[str], series: list[tuple[str, list[float]]], y_name: str,
                 title: str | None = None) -> Bar:
    bar = Bar().add_xaxis(x)
    for name, values in series:
        bar.add_yaxis(name, values, stack="total", label_opts=NO_LABEL)
    bar.set_global_opts(
        title_opts=opts.TitleOpts(title=title, is_show=bool(title)),
        legend_opts=_legend(),
        tooltip_opts=opts.TooltipOpts(trigger="axis", axis_pointer_type="shadow"),
        yaxis_opts=opts.AxisOpts(name=y_name, splitline_opts=opts.SplitLineOpts(is_show=True)))
    return bar


def hour_label(hour: datetime) -> str:
    return hour.astimezone(UTC).strftime("%H:00")


def overview_series(groups: list[Group], hours: list[datetime]) -> dict[str, Any]:
    """The overview's hourly charts from groups keyed (hour, domain, account_id, model): per
    grouping, total tokens and requests stacked by its values; and the token kinds."""
    x = [hour_label(hour) for hour in hours]
    tabs = []
    for index, (column, title) in enumerate(GROUPINGS, start=1):
        by_value = list(merge(groups, key=lambda g, i=index: (g.key[0], g.key[i])).values())
        tabs.append({
            "key": column, "label": title,
            "tokens": options(stacked_bars(
                x, series_by(by_value, column, hours, total_tokens), "tokens"), grid=_grid()),
            "requests": options(stacked_bars(
                x, series_by(by_value, column, hours, lambda c: c["request_count"]),
                "requests"), grid=_grid())})
    per_hour = merge(groups, key=lambda group: (group.key[0],))
    kinds = [(label, [per_hour[(hour,)].counts[name] if (hour,) in per_hour else 0
                      for hour in hours]) for name, label in TOKEN_KINDS]
    return {"tabs": tabs, "kinds": options(stacked_bars(x, kinds, "tokens"), grid=_grid())}


def daily_chart(groups: list[Group], days: list[date]) -> dict[str, Any]:
    """Stacked token kinds per UTC day, and the cost per day as a line on its own axis, from
    groups keyed (date, model) (`usage.daily`)."""
    per_day = merge(groups, key=lambda group: (group.key[0],))
    x = [day.isoformat() for day in days]

    def column(name: str) -> list[int]:
        return [int(per_day[(day,)].counts[name]) if (day,) in per_day else 0 for day in days]

    bar = stacked_bars(x, [(label, column(name)) for name, label in TOKEN_KINDS], "tokens")
    bar.extend_axis(yaxis=opts.AxisOpts(name="USD", type_="value", position="right",
                                        splitline_opts=opts.SplitLineOpts(is_show=False)))
    cost = (Line().add_xaxis(x)
            .add_yaxis("Cost (USD)", [dollars(value) for value in column("cost_microusd")],
                       yaxis_index=1, label_opts=NO_LABEL, is_smooth=False))
    bar.overlap(cost)
    return options(bar, grid=_grid())


def model_pie(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Total tokens per model (rows of `model_split`)."""
    pie = Pie().add("Tokens", [(row["label"], row["total_tokens"]) for row in rows],
                    radius=["40%", "70%"], center=["50%", "58%"],
                    label_opts=opts.LabelOpts(formatter="{b}: {d}%"))
    pie.set_global_opts(legend_opts=_legend(),
                        tooltip_opts=opts.TooltipOpts(trigger="item", formatter="{b}: {c} ({d}%)"))
    return options(pie)


def model_split(groups: list[Group]) -> list[dict[str, Any]]:
    """Figures per model (an unknown model last among equals), most tokens first."""
    merged = merge(groups, key=lambda group: group.key[1])
    rows = [{"model": model, "label": name_of("model", model), "counts": group.counts,
             "total_tokens": total_tokens(group.counts),
             "cost_usd": dollars(group.counts["cost_microusd"])}
            for model, group in merged.items()]
    return sorted(rows, key=lambda row: (-row["total_tokens"], -row["counts"]["request_count"],
                                         row["model"] is None, row["model"] or ""))


def tool_totals(rows: list[tuple]) -> list[tuple[str, int]]:
    """(tool name, calls) over `usage.tool_days` rows, most used first."""
    calls: dict[str, int] = {}
    for _, _, name, count in rows:
        calls[name] = calls.get(name, 0) + count
    return sorted(calls.items(), key=lambda item: (-item[1], item[0]))


def tools_chart(totals: list[tuple[str, int]]) -> dict[str, Any]:
    """The most used tools as horizontal bars (most used on top)."""
    top = list(reversed(totals[:TOP_TOOLS]))
    bar = (Bar().add_xaxis([name for name, _ in top])
           .add_yaxis("Calls", [count for _, count in top], label_opts=NO_LABEL)
           .reversal_axis())
    bar.set_global_opts(legend_opts=opts.LegendOpts(is_show=False),
                        tooltip_opts=opts.TooltipOpts(trigger="axis",
                                                      axis_pointer_type="shadow"))
    return options(bar, grid=_grid(top=8))


# --- 5-hour window gauges ------------------------------------------------------------------

@dataclass
class WindowGauge:
    """An account's 5-hour window as the dashboard shows it.

    `mode` says what `percent` is of: "limit" (output tokens of ALERT_WINDOW_TOKEN_LIMIT),
    "upstream" (the latest ledger sample's unified 5h utilization, while its reset is ahead)
    or "number" (neither is known: only the output tokens are shown, no gauge)."""

    account_id: str | None
    label: str
    window: Group
    leaves_at: datetime | None
    sample: RateLimitSample | None
    token_limit: int | None
    mode: str
    percent: float | None
    options: dict[str, Any] | None

    @property
    def output_tokens(self) -> int:
        return int(self.window.counts["output_tokens"])


def window_gauge(account_id: str | None, window: Group, sample: RateLimitSample | None,
                 now: datetime, token_limit: int | None,
                 thresholds: Iterable[int] = ()) -> WindowGauge:
    output = window.counts["output_tokens"]
    percent, mode = None, "number"
    if token_limit:
        mode, percent = "limit", round(output / token_limit * 100, 2)
    elif (sample is not None and sample.unified_5h_utilization is not None
          and (sample.unified_5h_reset is None or sample.unified_5h_reset > now)):
        mode, percent = "upstream", round(sample.unified_5h_utilization * 100, 2)
    label = name_of("account_id", account_id)
    leaves = window.oldest + timedelta(hours=WINDOW_HOURS) if window.oldest else None
    return WindowGauge(account_id, label, window, leaves, sample, token_limit, mode, percent,
                       gauge_options(label, percent, thresholds) if percent is not None else None)


def gauge_options(label: str, percent: float, thresholds: Iterable[int]) -> dict[str, Any]:
    """A gauge of `percent`, banded green / amber / red at the alert levels."""
    top = max(100, math.ceil(percent))
    levels = sorted(thresholds)
    if not levels:
        bands = [[1, OK]]
    elif len(levels) == 1:
        bands = [[round(levels[0] / top, 4), OK], [1, BAD]]
    else:  # below the first level, between the first and the last, above the last
        bands = [[round(levels[0] / top, 4), OK], [round(levels[-1] / top, 4), WARN], [1, BAD]]
    gauge = Gauge().add(
        label, [(label, percent)], min_=0, max_=top, radius="95%", center=["50%", "55%"],
        split_number=5,
        title_label_opts=opts.GaugeTitleOpts(is_show=False, color=None),
        detail_label_opts=opts.GaugeDetailOpts(formatter="{value}%", offset_center=[0, "72%"],
                                               color=None, font_size=18, font_weight="bold"),
        axisline_opts=opts.AxisLineOpts(linestyle_opts=opts.LineStyleOpts(width=8,
                                                                          color=bands)),
        axislabel_opts=opts.LabelOpts(is_show=False),
        pointer=opts.GaugePointerOpts(length="62%", width=4))
    gauge.set_global_opts(legend_opts=opts.LegendOpts(is_show=False),
                          tooltip_opts=opts.TooltipOpts(formatter="{b}: {c}%"))
    data = options(gauge)
    # Short ticks inside the band, so the value below the pointer stays clear.
    data["series"][0].update(splitLine={"length": 8, "distance": 2},
                             axisTick={"length": 3, "distance": 2})
    return data


def settings_limits() -> tuple[int | None, tuple[int, ...]]:
    settings = current_app.config["NEXUS_SETTINGS"]
    return settings.alert_window_token_limit, tuple(settings.alert_thresholds)


# --- the overview --------------------------------------------------------------------------

def overview_charts(now: datetime | None = None) -> dict[str, Any]:
    """The overview's charts: tokens and requests per hour of the last 24 hours (the current
    hour last, as far as it went) by domain, account and model, the token kinds per hour, and
    a gauge per account active in its 5-hour window (requests in it, or a ledger sample). One
    roll-up read for the series, then `usage.accounts` (a roll-up and a ledger read, one window
    read, two indexed lookups per account)."""
    now = now or _clock()
    end = floor_hour(now) + HOUR
    first = end - OVERVIEW_HOURS * HOUR
    with queries.read_session():
        groups = usage_series.hourly(first, end, UsageFilter(), ("domain", "account_id", "model"))
        found = usage.accounts(now, now - timedelta(hours=WINDOW_HOURS))
    limit, thresholds = settings_limits()
    since = now - timedelta(hours=WINDOW_HOURS)
    gauges = [window_gauge(item.account_id, item.window, item.sample, now, limit, thresholds)
              for item in found
              if item.window.counts["request_count"]
              or (item.sample is not None and item.sample.sampled_at >= since)]
    hours = usage_series.hours(first, end)
    return {"empty": not groups, "since": first, "until": end, "gauges": gauges,
            "token_limit": limit, **overview_series(groups, hours)}


bp.add_app_template_global(overview_charts, "overview_charts")
