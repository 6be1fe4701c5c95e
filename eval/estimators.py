"""The two success estimators the benchmarks report, from ``c`` successes in ``n`` tries of a task.

- Pass@k (Chen et al., 2021): the chance that at least one of ``k`` tries succeeds,
  ``1 - C(n-c, k) / C(n, k)``, unbiased when ``n >= k`` samples are drawn;
- pass^k (tau-bench): the chance that all ``k`` tries succeed, ``C(c, k) / C(n, k)``, as upstream
  computes it per task before averaging over tasks.
"""

from __future__ import annotations

from math import comb


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
