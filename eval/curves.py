"""A run's two figures, drawn from its ``metrics.jsonl``: held-out success at each evaluation, and
the training curves.

A reader opens them to see whether the run learned, so each figure shows only what says that, and
no series hides another:

- the training curves are the ones that matter (reward, success per domain, loss, KL and entropy,
  gradient norm, tokens/s), one panel each, not every number the trainer logs;
- series that coincide are drawn once under all their names ("reward (mean) = success:
  calculation" when one domain trains; "airline, retail, web" when all three stay at 0);
- a constant series is not drawn; the figure names it, with its value, once beneath the panels;
- every point has a marker (a one-point series still shows), and the evaluations are named on the
  x axis in plain type.

The figure functions return the matplotlib ``Figure`` (tests inspect its lines); :func:`save` writes
it. The evals' charts (:mod:`eval.report`) are drawn and saved through the same :func:`pyplot` and
:func:`save`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Metrics = Sequence[dict[str, Any]]
Points = list[tuple[float, float]]

PHASES = {"warm_start": "warm start", "rl": "RL"}
"""The phases whose step records carry training curves, and how a label names them."""

PANELS: tuple[tuple[str, tuple[tuple[str, str | dict[str, str]], ...]], ...] = (
    ("training episodes: reward and success", (("reward_mean", "reward (mean)"), ("success", "success"))),
    ("loss", (("loss", "loss"),)),
    ("KL and entropy", (("entropy", "entropy"), ("kl_base", "KL to base"), ("kl_rollout", "KL to rollout policy"))),
    ("gradient norm", (("grad_norm", "gradient norm"),)),
    ("tokens/s", (("tokens_per_s", {"warm_start": "tokens trained/s", "rl": "tokens generated/s, whole step"}),
                  ("rollout_tokens_per_s", "tokens generated/s, rollout alone"))),
)
"""The training curves that matter: (panel title, (metrics field, label) pairs); a label may differ
by phase (a mapping phase -> label); a field holding a mapping (success) gives one series per key."""

MARKERS = "osD^vPX*"


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only: no display needed, on any machine),
    imported when a figure is first drawn rather than with the module."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class Series:
    """One curve: its name and its (step, value) points."""

    label: str
    points: Points

    def same_as(self, other: Series) -> bool:
        if len(self.points) != len(other.points):
            return False
        return bool(np.allclose(np.array(self.points), np.array(other.points), rtol=1e-6, atol=1e-9))

    def constant(self) -> bool:
        values = [v for _, v in self.points]
        return len(values) > 1 and bool(np.allclose(values, values[0], rtol=1e-6, atol=1e-9))


@dataclass
class Panel:
    """One axis' worth of curves: those drawn (coinciding ones merged) and those left out as constant."""

    title: str
    drawn: list[Series] = field(default_factory=list)
    constant: list[Series] = field(default_factory=list)


def merge_coinciding(series: Sequence[Series]) -> list[Series]:
    """``series`` with each group of coinciding ones kept once, named by all of them (``a = b``)."""
    merged: list[Series] = []
    for one in series:
        twin = next((m for m in merged if m.same_as(one)), None)
        if twin is None:
            merged.append(Series(one.label, list(one.points)))
        else:
            twin.label = f"{twin.label} = {one.label}"
    return merged


def _value(record: dict[str, Any], name: str) -> Any:
    value = record.get(name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else None


def training_panels(metrics: Metrics) -> list[Panel]:
    """The panels of :data:`PANELS` that have data, each series split into drawn and constant."""
    panels = []
    for title, fields in PANELS:
        series: list[Series] = []
        for phase, phase_label in PHASES.items():
            records = [m for m in metrics if m.get("phase") == phase]
            for name, labels in fields:
                label = labels if isinstance(labels, str) else labels.get(phase, name)
                if any(isinstance(m.get(name), dict) for m in records):
                    for key in sorted({k for m in records for k in m.get(name) or {}}):
                        points = [(m["step"], m[name][key]) for m in records
                                  if isinstance(m.get(name), dict) and _value(m[name], key) is not None]
                        series.append(Series(f"{phase_label}: {label}: {key}", points))
                else:
                    points = [(m["step"], m[name]) for m in records if _value(m, name) is not None]
                    series.append(Series(f"{phase_label}: {label}", points))
        series = [s for s in series if s.points]
        if series:
            merged = merge_coinciding(series)
            panels.append(Panel(title, [s for s in merged if not s.constant()], [s for s in merged if s.constant()]))
    return panels


def _constant_note(panels: Sequence[Panel]) -> str:
    items = [f"{s.label} = {s.points[0][1]:.4g}" for p in panels for s in p.constant]
    return "constant, not drawn: " + "; ".join(items) if items else ""


def _draw(ax: Any, series: Sequence[Series]) -> None:
    for i, one in enumerate(series):
        ax.plot([x for x, _ in one.points], [y for _, y in one.points], marker=MARKERS[i % len(MARKERS)],
                markersize=7 - min(i, 3), linewidth=1.8, label=one.label)


def training_figure(metrics: Metrics) -> Figure:
    """The training curves that matter, one panel each (a blank panel saying so when there are none)."""
    from matplotlib.ticker import MaxNLocator

    every = training_panels(metrics)
    panels = [p for p in every if p.drawn]
    columns = min(2, max(len(panels), 1))
    rows = max(math.ceil(len(panels) / columns), 1)
    fig, axes = pyplot().subplots(rows, columns, figsize=(6.5 * columns, 3.6 * rows + 0.6), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        _draw(ax, panel.drawn)
        ax.set_title(panel.title, fontsize=11)
        ax.set_xlabel("update (step)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if panel.title == PANELS[0][0]:  # rates: on their whole scale, so that 0.02 does not look like 1
            ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if not panels:
        axes.flat[0].set_visible(True)
        axes.flat[0].axis("off")
        axes.flat[0].text(0.5, 0.5, "no training steps logged yet", ha="center", va="center", fontsize=12)
    note = _constant_note(every)
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    if note:
        fig.text(0.01, 0.01, note, fontsize=9, wrap=True)
    return fig


def heldout_series(metrics: Metrics) -> tuple[list[str], list[Series]]:
    """The evaluations in order (``stage`` and step, as the x axis names them) and each domain's
    success at them, x being the evaluation's position; coinciding domains merged."""
    evals = [m for m in metrics if m.get("phase") == "eval"]
    names = [f"{m.get('stage', '?')}\nstep {m['step']}" for m in evals]
    series = []
    for domain in sorted({d for m in evals for d in m.get("success", {})}):
        points = [(float(i), m["success"][domain]) for i, m in enumerate(evals) if domain in m.get("success", {})]
        sizes = sorted({m.get("n", {}).get(domain) for m in evals if domain in m.get("n", {})})
        series.append(Series(f"{domain} (n={'/'.join(map(str, sizes))})" if sizes else domain, points))
    merged = merge_coinciding(series)
    for one in merged:
        one.label = one.label.replace(" = ", ", ")
    return names, merged


def heldout_figure(metrics: Metrics) -> Figure:
    """Held-out success per domain at every evaluation (base, after warm start, during and after RL)."""
    from matplotlib.ticker import PercentFormatter

    names, series = heldout_series(metrics)
    fig, ax = pyplot().subplots(figsize=(max(6.5, 1.6 * len(names) + 3), 4.2))
    _draw(ax, series)
    ax.set_xticks(range(len(names)), names, fontsize=10)
    ax.set_xlim(-0.4, max(len(names) - 0.6, 0.4))
    ax.set_ylim(-0.05, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("held-out success")
    ax.set_title("held-out success per domain (domains with equal results share a line)", fontsize=11)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.text(0.5, 0.5, "no evaluation logged yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def save(fig: Figure, out: Path) -> Path:
    """Write ``fig`` as a PNG at ``out`` (through a temporary file, so a reader never sees half a
    file) and free it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    pyplot().close(fig)
    tmp.replace(out)
    return out
