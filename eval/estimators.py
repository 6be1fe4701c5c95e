"""The success estimators the benchmarks report, and how sure each figure is.

From ``c`` successes in ``n`` tries of a task:

- Pass@k (Chen et al., 2021): the chance that at least one of ``k`` tries succeeds,
  ``1 - C(n-c, k) / C(n, k)``, unbiased when ``n >= k`` samples are drawn;
- pass^k (tau-bench): the chance that all ``k`` tries succeed, ``C(c, k) / C(n, k)``, as upstream
  computes it per task before averaging over tasks.

95% intervals, so that a change of a few held-out tasks is not read as learning:

- :func:`wilson_interval` for a success rate over ``n`` tasks of one run (one episode each): unlike
  the normal approximation it stays inside [0, 1] and is not empty at 0 or ``n`` successes;
- :func:`bootstrap_interval` for a mean over tasks, or over tasks and seeds (several runs scoring the
  same tasks): a percentile bootstrap that resamples both, since a seed moves every task at once;
- :func:`success_interval` for a success rate over tasks and seeds: the bootstrap where it has
  something to resample, Wilson's where it would be a point (one run; every cell alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb, sqrt
from statistics import NormalDist

import numpy as np


def _check(n: int, c: int, k: int) -> None:
    if not 0 <= c <= n:
        raise ValueError(f"successes must be between 0 and the number of tries {n}, got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of tries {n}, got {k}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that at least one of ``k`` tries drawn from the ``n`` succeeds."""
    _check(n, c, k)
    return 1.0 - comb(n - c, k) / comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Chance that all ``k`` tries drawn from the ``n`` succeed (tau-bench's pass^k of one task)."""
    _check(n, c, k)
    return comb(c, k) / comb(n, k)


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the success rate ``successes / n``."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = _z(confidence)
    p = successes / n
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z / scale * sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (0.0 if successes == 0 else centre - half), (1.0 if successes == n else centre + half)


def bootstrap_interval(scores: Sequence[Sequence[float]], confidence: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean score; ``scores[s][t]`` is task ``t``'s score in run
    (seed) ``s``, every run scoring the same tasks in the same order (one run: ``[scores]``).

    Each resample draws the runs and the tasks with replacement, independently, and averages the
    drawn cells. For a difference between two stages (RL against warm start), pass each cell's
    difference: the pairing by task and seed then narrows the interval as it should.
    """
    table = np.asarray(scores, dtype=float)
    if table.ndim != 2 or table.size == 0:
        raise ValueError("scores must be one or more runs of the same non-zero number of tasks")
    _z(confidence)
    n_runs, n_tasks = table.shape
    rng = np.random.default_rng(seed)
    # how often each run and each task is drawn in each resample; the mean of the drawn cells follows
    runs = rng.multinomial(n_runs, np.full(n_runs, 1 / n_runs), size=resamples)
    tasks = rng.multinomial(n_tasks, np.full(n_tasks, 1 / n_tasks), size=resamples)
    means = ((runs @ table) * tasks).sum(axis=1) / (n_runs * n_tasks)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def success_interval(scores: Sequence[Sequence[float]], confidence: float = 0.95) -> tuple[float, float]:
    """Interval of a success rate; ``scores[s][t]`` is task ``t``'s result in run ``s``, 0 or 1.

    The bootstrap of one run resamples only its tasks, and at 0 or all successes it is the point
    [0, 0] or [1, 1]; several runs with every cell alike give that point too. Those get Wilson's
    interval over the tasks (runs scoring the same tasks alike add no evidence that tasks do not).
    Scores other than 0 and 1 (partial credit) get the bootstrap."""
    table = np.asarray(scores, dtype=float)
    binary = table.ndim == 2 and table.size > 0 and bool(np.isin(table, (0.0, 1.0)).all())
    if binary and (len(table) == 1 or (table == table[0, 0]).all()):
        return wilson_interval(int(table[0].sum()), table.shape[1], confidence)
    return bootstrap_interval(table, confidence)
