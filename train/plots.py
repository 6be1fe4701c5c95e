"""The run's curves, drawn from metrics.jsonl with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training(metrics: list[dict[str, Any]], out: Path) -> Path:
    """Reward and per-domain success of the training episodes, per RL step."""
    steps = [m for m in metrics if m.get("phase") == "rl"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        x = [m["step"] for m in steps]
        ax.plot(x, [m["reward_mean"] for m in steps], label="reward (mean)", color="black", linewidth=2)
        for domain in sorted({d for m in steps for d in m.get("success", {})}):
            ax.plot(x, [m["success"].get(domain) for m in steps], label=f"success: {domain}", alpha=0.7)
    ax.set_xlabel("update")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("training episodes")
    if steps:
        ax.legend(loc="best", fontsize=8)
    return _save(fig, out)


def plot_heldout(metrics: list[dict[str, Any]], out: Path) -> Path:
    """Held-out success per domain at every evaluation (base, after warm start, during and after RL)."""
    evals = [m for m in metrics if m.get("phase") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for domain in sorted({d for m in evals for d in m.get("success", {})}):
        points = [(m["step"], m["success"][domain]) for m in evals if domain in m["success"]]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=domain)
    for m in evals:
        ax.annotate(m["stage"], (m["step"], 1.0), fontsize=7, rotation=90, va="top", alpha=0.6)
    ax.set_xlabel("update")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("held-out success")
    if evals:
        ax.legend(loc="best", fontsize=8)
    return _save(fig, out)


def _save(fig: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
