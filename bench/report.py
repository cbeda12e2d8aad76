"""Benchmark figures and what is said about them: statistics, targets, the table, JSON, chart.

Pure logic, no Docker and no server: every scenario of bench/run.py returns `Figure`s
(ours against a baseline measured in the same run, with the raw samples), and this
module turns them into the printed table, the JSON file and the PNG chart.
"""

import json
import math
import statistics
from dataclasses import asdict, dataclass, field


def median(samples):
    """The median of a non-empty sequence of numbers."""
    values = list(samples)
    if not values:
        raise ValueError("median of no samples")
    return statistics.median(values)


def summary(samples):
    """{n, median, min, max, iqr} of `samples`: what the JSON keeps next to the raw values."""
    values = sorted(samples)
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {"n": len(values), "median": median(values), "min": values[0], "max": values[-1],
            "iqr": q3 - q1}


def ratio(value, baseline):
    """value / baseline, or None when there is no usable baseline."""
    if value is None or not baseline:
        return None
    return value / baseline


def interleave(runners, rounds, warmup=0):
    """Run each of `runners` ({name: callable returning a number}) once per round, in turn,
    so that noise from other work on the machine falls on all of them alike.

    The first `warmup` rounds are run and dropped. Returns {name: [sample per round]}.
    """
    samples = {name: [] for name in runners}
    for index in range(warmup + rounds):
        for name, run in runners.items():
            value = run()
            if index >= warmup:
                samples[name].append(value)
    return samples


@dataclass(frozen=True)
class Target:
    """What a figure must reach. `kind` says how it is compared with its baseline:

    ratio_max  value / baseline <= limit      ratio_min  value / baseline >= limit
    diff_max   value - baseline <= limit      abs_max    value <= limit
    """

    kind: str
    limit: float
    unit: str = ""

    KINDS = ("ratio_max", "ratio_min", "diff_max", "abs_max")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown target kind {self.kind!r}")

    def met(self, value, baseline):
        """True/False, or None when it cannot be judged (no value or no baseline)."""
        if value is None:
            return None
        if self.kind == "abs_max":
            return value <= self.limit
        if baseline is None:
            return None
        if self.kind == "diff_max":
            return value - baseline <= self.limit
        r = ratio(value, baseline)
        if r is None:
            return None
        return r <= self.limit if self.kind == "ratio_max" else r >= self.limit

    def describe(self):
        unit = f" {self.unit}" if self.unit else ""
        return {"ratio_max": f"<= {self.limit:g}x",
                "ratio_min": f">= {self.limit:g}x",
                "diff_max": f"<= +{self.limit:g}{unit}",
                "abs_max": f"<= {self.limit:g}{unit}"}[self.kind]


@dataclass
class Figure:
    """One row of the results: our median against the baseline's, from one run."""

    scenario: str
    major: int
    label: str
    unit: str
    value: float | None = None
    baseline: float | None = None
    baseline_label: str = ""
    target: Target | None = None
    samples: dict = field(default_factory=dict)
    notes: str = ""
    error: str = ""

    @property
    def ratio(self):
        return ratio(self.value, self.baseline)

    @property
    def met(self):
        if self.error or self.target is None:
            return None
        return self.target.met(self.value, self.baseline)

    def to_json(self):
        data = asdict(self)
        data["target"] = None if self.target is None else {**asdict(self.target),
                                                           "text": self.target.describe()}
        data["ratio"] = self.ratio
        data["met"] = self.met
        data["samples"] = {name: {"summary": summary(values), "raw": list(values)}
                           for name, values in self.samples.items() if values}
        return data


def fmt_number(value):
    """Three significant digits, without exponents for the sizes benchmarks produce."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_figure(fig):
    if fig.error:
        return "error"
    text = f"{fmt_number(fig.value)} {fig.unit}".strip()
    if fig.target is not None and fig.target.kind == "diff_max" and fig.value is not None \
            and fig.baseline is not None:
        text += f" (+{fmt_number(fig.value - fig.baseline)})"
    return text


def fmt_met(met):
    return {True: "yes", False: "NO", None: "-"}[met]


COLUMNS = ("scenario", "pg", "figure", "ours", "baseline", "ratio", "target", "met?")


def table_rows(figures):
    rows = []
    for fig in figures:
        baseline = "-" if fig.baseline is None else \
            f"{fmt_number(fig.baseline)} {fig.unit} {fig.baseline_label}".strip()
        rows.append((fig.scenario, str(fig.major), fig.label, fmt_figure(fig), baseline,
                     "-" if fig.ratio is None else f"{fig.ratio:.2f}x",
                     "-" if fig.target is None else fig.target.describe(), fmt_met(fig.met)))
    return rows


def format_table(figures):
    """The results as an aligned text table, one line per figure, errors listed below it."""
    rows = [COLUMNS] + table_rows(figures)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    judged = [fig.met for fig in figures if fig.met is not None]
    lines.append("")
    lines.append(f"targets met: {sum(judged)} of {len(judged)}")
    for fig in figures:
        if fig.error:
            lines.append(f"error in {fig.scenario} pg{fig.major} {fig.label}: {fig.error}")
    return "\n".join(lines)


def to_json(figures, meta):
    return json.dumps({"meta": meta, "figures": [fig.to_json() for fig in figures]},
                      indent=2, sort_keys=False)


def chart(figures, path, title):
    """A PNG with one panel per scenario: ours and the baseline side by side per figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(fig.scenario for fig in figures if fig.value is not None))
    if not scenarios:
        return False
    fig_h = 2.6 * len(scenarios) + 0.6
    figure, axes = plt.subplots(len(scenarios), 1, figsize=(10, fig_h), squeeze=False)
    for ax, scenario in zip(axes[:, 0], scenarios, strict=True):
        rows = [f for f in figures if f.scenario == scenario and f.value is not None]
        labels = [f"pg{f.major} {f.label}" for f in rows]
        ys = range(len(rows))
        ours = [f.value for f in rows]
        base = [f.baseline if f.baseline is not None else 0 for f in rows]
        ax.barh([y + 0.2 for y in ys], ours, height=0.4, label="pg_session_jwt", color="#3b6ea8")
        ax.barh([y - 0.2 for y in ys], base, height=0.4, label="baseline", color="#b0b0b0")
        for y, f in zip(ys, rows, strict=True):
            mark = {True: "met", False: "missed", None: ""}[f.met]
            text = f" {fmt_number(f.value)} {f.unit}"
            if f.ratio is not None:
                text += f"  ({f.ratio:.2f}x)"
            ax.text(f.value, y + 0.2, f"{text} {mark}", va="center", fontsize=7)
        ax.set_yticks(list(ys), labels, fontsize=7)
        ax.invert_yaxis()
        units = sorted({f.unit for f in rows})
        ax.set_xlabel(", ".join(units), fontsize=8)
        ax.set_title(scenario, fontsize=9, loc="left")
        ax.margins(x=0.25)
        ax.legend(fontsize=7, loc="lower right")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
