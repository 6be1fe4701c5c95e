"""Every command line's --help names itself and shows the defaults of its options, so a user sees
what a run will do before starting one."""

from __future__ import annotations

import argparse
import importlib
import re
import sys

import pytest

from envs.cli import ShowDefaults

COMMANDS = {  # module -> how its usage line names it
    "agents.challenge": "python -m agents.challenge", "envs.filter": "python -m envs.filter",
    "eval.heldout": "python -m eval.heldout", "eval.taubench": "python -m eval.taubench",
    "eval.m3tooleval": "python -m eval.m3tooleval", "eval.paper": "python -m eval.paper",
    "train.__main__": "python -m train",
    "train.compare": "python -m train.compare", "train.experiment": "python -m train.experiment",
    "bench.__main__": "python -m bench", "bench.challenger": "python -m bench.challenger",
    "bench.envs": "python -m bench.envs", "bench.policy": "python -m bench.policy",
    "bench.rollout": "python -m bench.rollout", "bench.sandbox": "python -m bench.sandbox",
    "bench.train": "python -m bench.train", "bench.gpu_check": "python -m bench.gpu_check",
}


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_help_names_the_command_and_the_defaults_of_its_options(module, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [COMMANDS[module], "--help"])  # main() reads the command line itself
    with pytest.raises(SystemExit) as done:
        importlib.import_module(module).main()
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith(f"usage: {COMMANDS[module]} ")
    assert "default" in text, f"{module} --help shows no default"
    # an option without a default says in its help what it does instead
    assert "(default: None)" not in text, f"{module} --help says (default: None)"
    twice = re.search(r"\(default: [^()]*\) \(default: [^()]*\)", text)
    assert not twice, f"{module} --help gives an option two defaults: {twice and twice.group()}"


def test_an_evaluations_out_help_says_where_its_results_go_by_default(capsys):
    with pytest.raises(SystemExit):
        importlib.import_module("eval.heldout").main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--out OUT output folder (default: RUN/eval/heldout-<split> with --run, else runs/eval/heldout/<model>)" \
        in text


def test_every_default_but_none_is_shown_unless_the_help_gives_it_in_the_same_form():
    """A false default (an off flag, a zero) is a default like any other, and a help that merely uses the
    word "default" has not stated the option's default."""
    parser = argparse.ArgumentParser(prog="cmd", formatter_class=ShowDefaults)
    parser.add_argument("--flag", action="store_true", help="switch it on")
    parser.add_argument("--retries", type=int, default=0, help="how often to retry")
    parser.add_argument("--model", default="tiny", help="the model, else the default one")
    parser.add_argument("--out", help="where to write")
    parser.add_argument("--k", type=int, default=4, help="samples per task (default: 4 per task, 1 with --greedy)")
    text = " ".join(parser.format_help().split())
    assert "--flag switch it on (default: False)" in text
    assert "--retries RETRIES how often to retry (default: 0)" in text
    assert "--model MODEL the model, else the default one (default: tiny)" in text
    assert "--out OUT where to write" in text and "(default: None)" not in text
    assert text.endswith("--k K samples per task (default: 4 per task, 1 with --greedy)")  # not a second one
