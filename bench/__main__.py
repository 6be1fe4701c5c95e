"""Run every benchmark module in ``bench/`` in turn (``python -m bench``, ``make bench``)."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import bench

log = logging.getLogger("bench")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        if callable(getattr(module, "main", None)):
            log.info("== bench.%s", info.name)
            module.main()


if __name__ == "__main__":
    main()
