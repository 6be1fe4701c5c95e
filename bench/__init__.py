"""Benchmarks: speed and memory against baselines measured in the same run (``python -m bench``).

Each module has a ``main()`` and prints its own table; none is run as a test, and none asserts a
timing, since a shared machine's speed drifts from run to run. Ratios against a baseline measured
side by side are what to compare.
"""
