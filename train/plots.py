"""The run's two plots, ``plots/heldout.png`` and ``plots/training.png``, as the trainer draws them
after each stage; the figures themselves are :mod:`eval.curves`', the same that a run's report
(:func:`eval.report.write_run_page`) shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval import curves


def plot_training(metrics: list[dict[str, Any]], out: Path) -> Path:
    """The training curves that matter (reward, success per domain, loss, KL and entropy, gradient
    norm, tokens/s), per update."""
    return curves.save(curves.training_figure(metrics), out)


def plot_heldout(metrics: list[dict[str, Any]], out: Path) -> Path:
    """Held-out success per domain at every evaluation (base, after warm start, during and after RL)."""
    return curves.save(curves.heldout_figure(metrics), out)
