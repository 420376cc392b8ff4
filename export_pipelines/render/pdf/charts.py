"""Charts a reader can read: aggregates of the stream with a readable number of points.

Each `Chart` of the spec becomes one `Series`, fed every batch of the same single pass that
draws the table, with bounded state whatever the row count:

- over a time column (a line): sums and counts per hour (folded into days past
  `MAX_HOUR_KEYS` hours), rolled up when drawn into the unit the window calls for — hours
  for up to two days, days up to 62 days, then weeks, months, years — so a line has at most
  about 60 points. Empty buckets are zero for counts and sums, and left out for means;
- over a dimension (bars): sums and counts per category for the first
  `MAX_CATEGORY_KEYS` categories (later ones go to "Other"); the `limit` largest are drawn
  as horizontal bars — so labels have the room of a line, not of a bar — the rest as one
  "Other" bar. A label still too long is cut with "…" and a number, and written in full in
  a legend under the chart.

Titles say what is measured and how it is grouped: "Mean DCS score per day", "Scans by
audit type". A chart whose columns are not in the stream (a request for some columns
only) says so in place of the chart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from reportlab.graphics.charts.barcharts import HorizontalBarChart
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, String
from reportlab.graphics.widgets.markers import makeMarker
from reportlab.lib import colors

from export_pipelines.columns import Unit
from export_pipelines.render import Chart, ReportContext
from export_pipelines.render.pdf.cells import format_number, is_number
from export_pipelines.render.pdf.text import DEJAVU, GREY_TEXT, Face, fonts, wrap

MAX_POINTS = 62  # a line keeps at most this many points (a 62-day window, per day)
MAX_HOUR_KEYS = 24 * 62
MAX_CATEGORY_KEYS = 10_000
BAR_PITCH = 22.0  # the most height one bar and its gap take
OTHER = "Other"
NOTHING = "Nothing to chart in this period."

SERIES_COLOR = colors.Color(0.16, 0.38, 0.65)
GRID_COLOR = colors.Color(0.88, 0.9, 0.92)

# (name, longest window it is used for): the first whose bound holds is the bucket unit.
_UNITS = (
    ("hour", dt.timedelta(days=2)),
    ("day", dt.timedelta(days=MAX_POINTS)),
    ("week", dt.timedelta(weeks=MAX_POINTS)),
    ("month", dt.timedelta(days=MAX_POINTS * 31)),
    ("year", dt.timedelta.max),
)


def _first_lower(text: str) -> str:
    """ "Audit type" → "audit type"; acronyms ("DCS score") keep their capitals."""
    return text if text[1:2].isupper() else text[:1].lower() + text[1:]


def bucket_start(moment: dt.datetime, unit: str) -> dt.datetime:
    if unit == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return day
    if unit == "week":  # ISO weeks: Monday
        return day - dt.timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def next_bucket(start: dt.datetime, unit: str) -> dt.datetime:
    if unit in ("hour", "day", "week"):
        return start + {"hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1)}.get(
            unit, dt.timedelta(weeks=1)
        )
    if unit == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start.replace(year=start.year + 1)


def bucket_label(start: dt.datetime, unit: str, span_years: bool) -> str:
    if unit == "hour":
        return start.strftime("%b %d %H:%M")
    if unit in ("day", "week"):
        return start.strftime("%b %d %Y" if span_years else "%b %d")
    if unit == "month":
        return start.strftime("%b %Y")
    return start.strftime("%Y")


class Series:
    """One chart's aggregate of the stream, in bounded memory."""

    def __init__(self, chart: Chart, schema: pa.Schema, context: ReportContext):
        self.chart = chart
        self.context = context
        self.problem = self._problem(schema)
        by_type = schema.field(chart.by).type if chart.by in schema.names else pa.string()
        self.over_time = pa.types.is_timestamp(by_type) or pa.types.is_date(by_type)
        self.floor = "hour" if pa.types.is_timestamp(by_type) else "day"
        self.sums: dict[object, float] = {}
        self.counts: dict[object, int] = {}
        self.other_sum, self.other_count = 0.0, 0
        if not self.problem and chart.kind == "line" and not self.over_time:
            self.problem = f"No chart: {chart.by!r} is not a time column."

    def _problem(self, schema: pa.Schema) -> str | None:
        chart, names = self.chart, schema.names
        if chart.by not in names:
            return f"No chart: the column {chart.by!r} is not in this export."
        if chart.function != "count":
            if chart.value not in names:
                return f"No chart: the column {chart.value!r} is not in this export."
            if not is_number(schema.field(chart.value).type):
                return f"No chart: {chart.value!r} is not a number."
        return None

    @property
    def unit(self) -> Unit:
        """How the chart's values read: counts of rows, or the value column's unit."""
        if self.chart.function == "count" or self.chart.value is None:
            return Unit.COUNT
        unit = self.context.column(self.chart.value).reader_unit or Unit.DECIMAL
        if self.chart.function == "mean" and unit in (Unit.COUNT, Unit.CREDITS):
            return Unit.DECIMAL  # a mean of whole numbers is not a whole number
        return unit

    def add(self, batch: pa.RecordBatch) -> None:
        if self.problem or batch.num_rows == 0:
            return
        keys = batch.column(self.chart.by)
        keep = pc.is_valid(keys)
        counting = self.chart.function == "count"
        if counting:
            values = pa.nulls(batch.num_rows, pa.float64())
        else:
            values = batch.column(self.chart.value).cast(pa.float64())
            keep = pc.and_(keep, pc.fill_null(pc.is_finite(values), False))
        keys, values = pc.filter(keys, keep), pc.filter(values, keep)
        keys = self._keys(keys)
        grouped = pa.table({"k": keys, "v": values}).group_by("k")
        if counting:
            grouped = grouped.aggregate([([], "count_all")])
            totals = grouped["count_all"].to_pylist()
            counts = totals
        else:
            grouped = grouped.aggregate([("v", "sum"), ("v", "count")])
            totals, counts = grouped["v_sum"].to_pylist(), grouped["v_count"].to_pylist()
        self._merge(grouped["k"].to_pylist(), totals, counts)

    def _keys(self, keys: pa.Array) -> pa.Array:
        if not self.over_time:
            return keys if keys.type == pa.string() else keys.cast(pa.string())
        if pa.types.is_timestamp(keys.type):  # naive UTC: bucket starts compare plainly
            keys = keys.cast(pa.timestamp("us", tz=keys.type.tz)).cast(pa.timestamp("us"))
        else:
            keys = keys.cast(pa.date32()).cast(pa.timestamp("us"))
        return pc.floor_temporal(keys, unit=self.floor)

    def _merge(self, keys: Sequence, totals: Sequence, counts: Sequence) -> None:
        sums, counts_of = self.sums, self.counts
        for key, total, count in zip(keys, totals, counts):
            if key in sums:
                sums[key] += total
                counts_of[key] += count
            elif self.over_time or len(sums) < MAX_CATEGORY_KEYS:
                sums[key] = total
                counts_of[key] = count
            else:
                self.other_sum += total
                self.other_count += count
        if self.over_time and self.floor == "hour" and len(sums) > MAX_HOUR_KEYS:
            self.floor = "day"
            self.sums, self.counts = self._rolled("day")

    def _rolled(self, unit: str) -> tuple[dict, dict]:
        sums: dict[object, float] = {}
        counts: dict[object, int] = {}
        for key, total in self.sums.items():
            start = bucket_start(key, unit)
            sums[start] = sums.get(start, 0.0) + total
            counts[start] = counts.get(start, 0) + self.counts[key]
        return sums, counts

    def _value(self, total: float, count: int) -> float:
        return total / count if self.chart.function == "mean" else total

    # --- what is drawn ---------------------------------------------------------------------

    def time_unit(self) -> str:
        start, end = self.span()
        unit = next(name for name, longest in _UNITS if end - start <= longest)
        return "day" if unit == "hour" and self.floor == "day" else unit

    def span(self) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) in naive UTC: the window when known, else the data's own range."""
        ctx = self.context
        if ctx.window_start is not None and ctx.window_end is not None:
            naive = [
                t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t
                for t in (ctx.window_start, ctx.window_end)
            ]
            return naive[0], naive[1]
        return min(self.sums), max(self.sums) + dt.timedelta(hours=1)

    def points(self) -> list[tuple[dt.datetime, float]]:
        """(bucket start, value) over the whole span: zero or absent where nothing happened."""
        unit = self.time_unit()
        sums, counts = self._rolled(unit)
        start, end = self.span()
        out = []
        for moment in _buckets(bucket_start(start, unit), end, unit):
            if counts.get(moment):
                out.append((moment, self._value(sums[moment], counts[moment])))
            elif self.chart.function != "mean":
                out.append((moment, 0.0))
        return out

    def bars(self) -> list[tuple[str, float]]:
        """(category, value), largest first: `limit` of them, then "Other" for the rest."""
        ranked = sorted(
            ((k, self._value(v, self.counts[k])) for k, v in self.sums.items()),
            key=lambda kv: (-kv[1], str(kv[0])),
        )
        shown = ranked[: self.chart.limit]
        rest = [k for k, _ in ranked[self.chart.limit :]]
        total = self.other_sum + sum(self.sums[k] for k in rest)
        count = self.other_count + sum(self.counts[k] for k in rest)
        if count:
            shown.append((OTHER, self._value(total, count)))
        return [(str(k), v) for k, v in shown]

    def title(self) -> str:
        if self.over_time and not self.problem and self.sums:
            return f"{self.chart.title} per {self.time_unit()}"
        heading = self.context.column(self.chart.by).heading
        return f"{self.chart.title} by {_first_lower(heading)}"


def _buckets(start: dt.datetime, end: dt.datetime, unit: str) -> Iterator[dt.datetime]:
    moment = start
    while moment < end:
        yield moment
        moment = next_bucket(moment, unit)


# --- drawing ---------------------------------------------------------------------------------


def drawing(series: Series, width: float, height: float) -> Drawing:
    """The chart with its title, in a `width` × `height` box."""
    font_set = fonts()
    canvas = Drawing(width, height)
    title = series.title()
    canvas.add(
        String(
            0,
            height - 11,
            title,
            fontName=font_set.covering(title, DEJAVU["body-bold"]),
            fontSize=9.5,
        )
    )
    if series.problem or not series.sums:
        message = series.problem or NOTHING
        canvas.add(String(0, height - 30, message, fontName=DEJAVU["body"], fontSize=8))
        return canvas
    if series.over_time:
        _line(canvas, series, width, height - 18)
    else:
        _bars(canvas, series, width, height - 18)
    return canvas


def _axis_label(unit: Unit):
    def label(value: float) -> str:
        if abs(value) >= 10_000:
            for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
                if abs(value) >= limit:
                    return f"{value / limit:,.3g}{suffix}"
        if unit in (Unit.COUNT, Unit.CREDITS) and value != int(value):
            return ""  # no half scans on an axis of counts
        return format_number(value, Unit.DECIMAL if unit is Unit.CREDITS else unit)

    return label


def _line(canvas: Drawing, series: Series, width: float, height: float) -> None:
    points = series.points()
    if not points:  # rows only outside the window: nothing to place on its axis
        canvas.add(String(0, height - 12, NOTHING, fontName=DEJAVU["body"], fontSize=8))
        return
    unit = series.time_unit()
    start, end = series.span()
    full = list(_buckets(bucket_start(start, unit), end, unit))
    index = {m: i for i, m in enumerate(full)}
    plot = LinePlot()
    plot.x, plot.y, plot.width, plot.height = 42, 22, width - 52, height - 30
    plot.data = [[(index[m], v) for m, v in points]]
    line = plot.lines[0]
    line.strokeColor, line.strokeWidth = SERIES_COLOR, 1.4
    if len(points) <= 40:
        line.symbol = makeMarker("FilledCircle", size=3, fillColor=SERIES_COLOR)
    x_axis, y_axis = plot.xValueAxis, plot.yValueAxis
    x_axis.valueMin, x_axis.valueMax = 0, max(len(full) - 1, 1)
    x_axis.valueSteps = list(range(0, len(full), max(1, -(-len(full) // 8))))
    span_years = full[0].year != full[-1].year
    x_axis.labelTextFormat = lambda i: (
        bucket_label(full[int(i)], unit, span_years) if 0 <= int(i) < len(full) else ""
    )
    lowest = min(v for _, v in points)
    if series.chart.function != "mean":  # totals are read against zero; means by their range
        y_axis.valueMin = min(0.0, lowest)
    y_axis.labelTextFormat = _axis_label(series.unit)
    y_axis.visibleGrid, y_axis.gridStrokeColor = True, GRID_COLOR
    for axis in (x_axis, y_axis):
        axis.labels.fontName, axis.labels.fontSize = DEJAVU["body"], 7
        axis.labels.fillColor = GREY_TEXT
    canvas.add(plot)


def _bars(canvas: Drawing, series: Series, width: float, height: float) -> None:
    font_set = fonts()
    bars = series.bars()
    face = Face(DEJAVU["body"], 7)
    label_room = min(0.38 * width, max(face.width(k) for k, _ in bars) + 6)
    labels, legend = [], []
    for key, _ in bars:
        if face.width(key) <= label_room - 6:
            labels.append(key)
            continue
        mark = f" [{len(legend) + 1}]"
        cut = wrap(key, face, label_room - 6 - face.width(mark), 1)[0]
        labels.append((cut if cut.endswith("…") else cut + "…") + mark)
        legend.append(f"[{len(legend) + 1}] {key}")
    legend_lines = wrap("   ".join(legend), face, width, 3) if legend else []
    legend_room = 9.0 * len(legend_lines) + (4 if legend else 0)
    chart = HorizontalBarChart()
    room = height - 16 - legend_room
    chart.height = min(room, BAR_PITCH * len(bars))  # a few bars stay bars, not blocks
    chart.x, chart.y = label_room, 14 + legend_room + room - chart.height
    chart.width = width - label_room - 44
    # HorizontalBarChart draws its first category at the bottom: largest goes last.
    chart.data = [[v for _, v in reversed(bars)]]
    chart.categoryAxis.categoryNames = list(reversed(labels))
    chart.bars[0].fillColor = SERIES_COLOR
    chart.bars[0].strokeColor = None
    chart.categoryAxis.labels.fontName, chart.categoryAxis.labels.fontSize = DEJAVU["body"], 7
    for i, label in enumerate(reversed(labels)):  # per label: CJK may need the fallback font
        chart.categoryAxis.labels[i].fontName = font_set.covering(label, DEJAVU["body"])
    chart.categoryAxis.labels.boxAnchor = "e"
    chart.categoryAxis.labels.dx = -3
    chart.categoryAxis.visibleTicks = False
    value_axis = chart.valueAxis
    value_axis.valueMin = min(0.0, min(v for _, v in bars))
    value_axis.labelTextFormat = _axis_label(series.unit)
    value_axis.labels.fontName, value_axis.labels.fontSize = DEJAVU["body"], 7
    value_axis.labels.fillColor = GREY_TEXT
    value_axis.visibleGrid, value_axis.gridStrokeColor = True, GRID_COLOR
    chart.barLabelFormat = lambda v: format_number(v, series.unit)
    chart.barLabels.fontName, chart.barLabels.fontSize = DEJAVU["body"], 6.5
    chart.barLabels.boxAnchor, chart.barLabels.dx = "w", 3
    chart.barLabels.fillColor = GREY_TEXT
    canvas.add(chart)
    y = legend_room - 4
    for line in legend_lines:
        font = font_set.covering(line, DEJAVU["body"])
        canvas.add(String(0, y, line, fontName=font, fontSize=7, fillColor=GREY_TEXT))
        y -= 9
