"""``make train``: the whole self-challenging loop.

The trainer is not built yet: the environments, the task filter and the sandbox are. Until it lands
this entry point says so and exits with status 2, so that no one mistakes it for a finished run.
"""

import sys

MESSAGE = """\
make train: the trainer is not built yet.

What works today:
  make test                                  the test suite (environments, filter, sandbox)
  python -m envs.filter POOL.jsonl           filter a pool of Code-as-Tasks and print the report
  python -c "import gymnasium as gym, envs; env = gym.make('SelfChallenge-Calculation-v0')"
"""


def main() -> int:
    print(MESSAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
