"""The benchmarks' command line and progress, with tiny shapes: a tiny random model, a few tokens.

Their speed is not tested (a shared machine's speed drifts); what is: each stage logs as it goes,
never silent for 30 s, and ``python -m bench`` runs every module and gathers its ratios.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import time
from pathlib import Path

import pytest
import torch

import bench
from agents.models import load_tokenizer
from bench import __main__ as bench_main
from envs.registry import DOMAINS
from train.progress import heartbeat
from test_train_support import save_model, tiny_llama

SILENCE_S = 30


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    tokenizer = load_tokenizer()
    return save_model(tiny_llama(tokenizer), tokenizer, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def keeps_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def timestamps(caplog, started: float, name: str) -> list[float]:
    return [started] + [r.created for r in caplog.records if r.name == name] + [time.time()]


def assert_never_silent(stamps: list[float]) -> None:
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert max(gaps) < SILENCE_S, f"a silent gap of {max(gaps):.0f} s"


def test_bench_policy_logs_every_turn_of_both_players(tiny_model_dir, caplog, capsys):
    from bench import policy

    caplog.set_level(logging.INFO)
    started = time.time()
    policy.main(["--model", str(tiny_model_dir), "--device", "cpu", "--episodes", "2", "--turns", "2", "--cap", "3"])
    assert_never_silent(timestamps(caplog, started, "bench.policy"))
    for player in ("complete", "re-encoding"):
        for turn in (1, 2):
            assert f"{player}: turn {turn} of 2 took" in caplog.text
    assert "2 chats x 2 turns" in capsys.readouterr().out


def test_bench_rollout_logs_the_rollout_and_every_generate_turn(tiny_model_dir, caplog, capsys):
    from bench import rollout

    caplog.set_level(logging.INFO)
    started = time.time()
    rollout.main(["--model", str(tiny_model_dir), "--device", "cpu", "--episodes", "2", "--turns", "2", "--cap", "3"])
    assert_never_silent(timestamps(caplog, started, "bench.rollout"))
    assert "rollout: took" in caplog.text and "generate: turn 1 of 2 took" in caplog.text
    out = capsys.readouterr().out
    assert "ratio" in out and "with 2 worker processes (async); the same episodes: yes" in out


def test_bench_train_logs_each_step_of_our_engine(tiny_model_dir, caplog, monkeypatch):
    from bench import train

    monkeypatch.setitem(DOMAINS, "calculation", DOMAINS["calculation"])  # the bench swaps in a one-turn env
    caplog.set_level(logging.INFO)
    started = time.time()
    result = train.measure("ours", "short", 1, str(tiny_model_dir), "cpu")
    assert_never_silent(timestamps(caplog, started, "bench.train"))
    assert "ours: warm-up step took" in caplog.text and "ours: step 1 of 1 took" in caplog.text
    assert len(result["times"]) == 1 and result["tokens"][0] > 0 and result["peak_memory_gib"] > 0


def test_bench_challenger_prints_its_rates_and_where_its_time_goes(tiny_model_dir, caplog, capsys):
    from bench import challenger

    caplog.set_level(logging.INFO)
    started = time.time()
    challenger.main(["--model", str(tiny_model_dir), "--device", "cpu", "--proposals", "2", "--cap", "4"])
    assert_never_silent(timestamps(caplog, started, "bench.challenger"))
    out = capsys.readouterr().out
    assert "2 proposals (calculation)" in out and "funnel 2 > 0 > 0 > 0 > 0 > 0" in out
    assert "proposals/min" in out and "kept tasks/min" in out
    assert "generation" in out and "tools" in out and "sandbox (parse and filter)" in out


def test_a_long_call_logs_that_it_is_still_running(caplog):
    caplog.set_level(logging.INFO)
    log = logging.getLogger("bench.test")
    with heartbeat("slow call", log, every=0.05):
        time.sleep(0.3)
    assert caplog.text.count("slow call: still running") >= 2


def test_python_m_bench_relays_a_child_and_says_when_it_is_silent(caplog, capfd):
    caplog.set_level(logging.INFO)
    code, output = bench_main.relay([sys.executable, "-c", "import time; time.sleep(0.5); print('done')"], "child",
                                    heartbeat=0.1)
    assert code == 0 and output == "done\n" and "done" in capfd.readouterr().out
    assert "child: still running" in caplog.text


def test_python_m_bench_runs_every_module_of_bench():
    modules = {m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")}
    assert {b.name for b in bench_main.BENCHMARKS} == modules - {"gpu_check"}  # which runs python -m bench


def test_python_m_bench_gives_the_model_and_device_to_the_model_benchmarks_alone(monkeypatch):
    commands = []
    monkeypatch.setattr(bench_main, "relay", lambda command, what: (commands.append(command), (0, ""))[1])
    assert bench_main.main(["--model", "some/model", "--device", "cpu", "--only", "envs", "rollout"]) == 0
    envs, rollout = commands
    assert "--model" not in envs and "--device" not in envs
    assert rollout[rollout.index("--model") + 1] == "some/model" and rollout[rollout.index("--device") + 1] == "cpu"


def test_device_auto_is_the_device_torch_has_as_the_hint_of_a_refused_cuda_says(monkeypatch, capsys):
    import torch
    from agents.models import DeviceError, pick_device
    commands = []
    monkeypatch.setattr(bench_main, "relay", lambda command, what: (commands.append(command), (0, ""))[1])
    assert bench_main.main(["--device", "auto", "--only", "rollout"]) == 0
    has = "cuda" if torch.cuda.is_available() else "cpu"
    assert commands[0][commands[0].index("--device") + 1] == has
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="or auto"):
        pick_device("cuda")
    assert bench_main.main(["--device", "auto", "--only", "rollout"]) == 0
    assert commands[1][commands[1].index("--device") + 1] == "cpu"
    with pytest.raises(SystemExit) as exit_:
        bench_main.main(["--device", "gpu"])
    assert exit_.value.code == 2 and "invalid choice: 'gpu'" in capsys.readouterr().err


@pytest.mark.parametrize("line, is_ratio", [
    ("ratio     3.35x  (target >= 1.5x); replies that agree: 32 of 32", True),
    ("    local / naive           12.0x (1 caller)   11.9x (2 callers)   target >= 10x", True),
    ("reset   ours    0.012 ms   tau-bench reload   40.00 ms   ratio   3333.3x  (target >= 100x)", True),
    ("rollout   8 envs x 3 turns, cap 32, cpu: 512 tokens in 20.1 s = 25.5 tokens/s", False),
])
def test_the_summary_picks_the_ratio_lines(line, is_ratio):
    assert bool(bench_main.RATIO.search(line)) is is_ratio


@pytest.mark.parametrize("module, argv, problem", [
    ("rollout", ["--episodes", "0"], "--episodes: must be at least 1, got 0"),
    ("policy", ["--cap", "many"], "--cap: not a whole number: 'many'"),
    ("challenger", ["--explore-turns", "-1"], "--explore-turns: must be at least 0, got -1"),
    ("train", ["--rounds", "0"], "--rounds: must be at least 1, got 0"),
    ("sandbox", ["--rounds", "0"], "--rounds: must be at least 1, got 0"),
    ("sandbox", ["--seconds", "0"], "--seconds must be above 0"),
    ("rollout", ["--model", "no/such/model", "--device", "cpu"], "cannot load model 'no/such/model'"),
    ("policy", ["--model", "no/such/model", "--device", "cpu"], "cannot load model 'no/such/model'"),
    ("train", ["--model", "no/such/model", "--device", "cpu"], "cannot load model 'no/such/model'"),
])
def test_a_bad_size_or_model_exits_2_saying_what_is_wrong_before_anything_runs(module, argv, problem, capsys):
    main = importlib.import_module(f"bench.{module}").main
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and problem in capsys.readouterr().err


def test_bench_challenger_refuses_an_adapter_it_cannot_load(tiny_model_dir, tmp_path, capsys):
    from bench import challenger
    with pytest.raises(SystemExit) as exit_:
        challenger.main(["--model", str(tiny_model_dir), "--device", "cpu", "--adapter", str(tmp_path)])
    assert exit_.value.code == 2 and "cannot load the LoRA adapter" in capsys.readouterr().err
