"""The calculation environment: calculator-style tools over a seeded world of rates, taxes, duties and units."""

from __future__ import annotations

from typing import Any

from envs.base import ToolEnv
from envs.calculation.tools import TOOLSET
from envs.calculation.world import build_world
from envs.state import State

POLICY = """\
You are a careful calculation assistant. Solve the user's task with the tools, then call finish.
- This world's exchange rates, consumption taxes, import duties and trade-unit sizes are its own:
  look them up with the tools, never from memory.
- Use the tools for every computation (conversions, arithmetic, statistics, text and DNA work) rather
  than working numbers out in your head.
- Unless the task says otherwise, a duty is charged on the goods' price and a consumption tax on the
  price including any duty; money is kept to the cent.
- When the task asks you to record something in the ledger, record it before you finish.
- Finish with the requested value at the end of your answer: a plain number without thousands
  separators (e.g. "1234.56"), or the exact text asked for (e.g. a decoded message or a sequence)."""


class CalculationEnv(ToolEnv):
    """A calculator-style tool-use environment over a seeded world, after M3ToolEval's trade
    calculator, message decoder and DNA sequencer (with our own tools and tasks).

    ## Description

    Each episode is one Code-as-Task: an instruction such as "A company in Norway buys 3 espresso
    machines from a supplier in Japan, at 61500 JPY each. (...) What is the total landed cost in
    NOK?", "Decode this message, encoded with ROT13: ..." or "Record these invoices in the ledger
    in EUR (...)". The agent answers it with 22 tools, then calls ``finish``:

    - trade: ``list_currencies``, ``get_exchange_rate``, ``convert_currency``, ``list_countries``,
      ``get_country`` (currency and consumption tax), ``list_tariff_categories``, ``get_tariff``,
      ``add_percentage``;
    - units: ``list_units``, ``convert_units`` (metric, imperial, temperature and the world's trade
      units: crate, sack, bolt, barrel, drum);
    - arithmetic: ``calculate`` (a safe expression evaluator), ``aggregate`` (sum, mean, median, min,
      max, count);
    - text: ``reverse_text``, ``caesar_shift``, ``count_occurrences``, ``text_length``;
    - DNA: ``reverse_complement``, ``gc_content``, ``transcribe``, ``translate`` (standard code);
    - ledger: ``record_entry`` (the one tool that writes), ``get_ledger``.

    The world (its rates, taxes, duties and trade-unit sizes) comes from the task's ``world``
    (``{"seed": s}``), so the real world's figures are wrong here and must be looked up.

    ## Action Space

    A string: a JSON tool call ``{"name": ..., "arguments": {...}}`` (bare, in ``<tool_call>`` tags
    or after ``Action:``), or Python code in a ```` ```python ```` block calling the tools as
    functions (its printed output is the observation). ``finish`` takes ``answer``.

    ## Observation Space

    A string (:class:`envs.spaces.AnyText`): the instruction after ``reset``, then each tool's output
    (numbers as plain text, money to the cent, lookups as JSON, errors as ``Error: ...``).

    ## Rewards

    0 on every step until the episode ends, then 1.0 if the task's verifier accepts the final state
    and answer, else 0.0. Verifiers check the last number of the answer within a small tolerance, or
    the exact text after its last colon (case and surrounding quotes ignored), and the ledger's
    entries for the tasks that ask for records.

    ## Starting State

    ``reset`` draws a task from the pool (``options={"task_id": ...}`` picks one) and gives the episode
    its own copy-on-write view of that task's world, with an empty ledger. ``info`` carries the tool schemas
    (OpenAI function format) and the policy text; never the verifier or the solution.

    ## Episode End

    1. Termination: the agent calls ``finish``.
    2. Truncation: ``max_turns`` actions have been taken (default 20).

    ## Arguments

    ```python
    >>> import gymnasium as gym
    >>> import envs
    >>> env = gym.make("SelfChallenge-Calculation-v0")  # the default pool: 32 scripted tasks
    >>> obs, info = env.reset(seed=0)
    ```

    | Parameter     | Type                            | Default | Description                                          |
    |---------------|---------------------------------|---------|------------------------------------------------------|
    | `tasks`       | path, list of CaTs, or `None`   | `None`  | The task pool; `None` uses the scripted challenger's |
    | `max_turns`   | **int**                         | `20`    | Actions before the episode is truncated              |
    | `sandbox`     | `"local"`, `"docker"`, a `Sandbox` | `"local"` | Where verifiers and code actions run           |
    | `render_mode` | `"ansi"` or `None`              | `None`  | `"ansi"` renders the transcript as text              |

    Make more tasks with :func:`envs.calculation.challenger.make_tasks` (``seed``, ``n``).
    """

    domain = "calculation"
    toolset = TOOLSET
    policy = POLICY

    @classmethod
    def build_world(cls, world: dict[str, Any]) -> State:
        unknown = set(world) - {"seed"}
        if unknown:
            raise ValueError(f"a calculation world takes only a seed, got {sorted(unknown)}")
        return build_world(int(world.get("seed", 0)))


__all__ = ["CalculationEnv"]
