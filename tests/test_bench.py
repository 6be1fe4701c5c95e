"""The benchmarks' command line and progress, with tiny shapes: a tiny random model, a few tokens.

Their speed is not tested (a shared machine's speed drifts); what is: each stage logs as it goes,
never silent for 30 s, and ``python -m bench`` runs every module and gathers its ratios.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import re
import sys
import time
from dataclasses import replace
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


def assert_ratio_of_rates(out: str) -> None:
    """The printed ratio is the first rate printed (ours) over the second (the baseline's), within their rounding."""
    ours, theirs = (float(rate) for rate in re.findall(r"= ([\d.]+) tokens/s", out))  # each to 0.05
    ratio = float(re.search(r"^ratio +([\d.]+)x", out, re.MULTILINE)[1])
    assert (ours - 0.05) / (theirs + 0.05) - 0.005 <= ratio <= (ours + 0.05) / max(theirs - 0.05, 1e-9) + 0.005


def assert_never_silent(stamps: list[float]) -> None:
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert max(gaps) < SILENCE_S, f"a silent gap of {max(gaps):.0f} s"


def test_bench_policy_logs_every_turn_of_both_players(tiny_model_dir, caplog, capsys):
    """Also: the ratio printed is ours over the re-encoding baseline's rate, and the replies compared are all of them
    (3 chats x 2 turns)."""
    from bench import policy

    caplog.set_level(logging.INFO)
    started = time.time()
    policy.main(["--model", str(tiny_model_dir), "--device", "cpu", "--episodes", "3", "--turns", "2", "--cap", "3"])
    assert_never_silent(timestamps(caplog, started, "bench.policy"))
    for player in ("complete", "re-encoding"):
        for turn in (1, 2):
            assert f"{player}: turn {turn} of 2 took" in caplog.text
    out = capsys.readouterr().out
    assert "3 chats x 2 turns" in out
    assert_ratio_of_rates(out)
    assert 0 <= int(re.search(r"replies that agree: (\d+) of 6$", out, re.MULTILINE)[1]) <= 6


def test_bench_rollout_logs_the_rollout_and_every_generate_turn(tiny_model_dir, caplog, capsys):
    """Also: the ratio is ours over generate's rate, and on the CPU each share of the time printed is one (0-100%)."""
    from bench import rollout

    caplog.set_level(logging.INFO)
    started = time.time()
    rollout.main(["--model", str(tiny_model_dir), "--device", "cpu", "--episodes", "2", "--turns", "2", "--cap", "3"])
    assert_never_silent(timestamps(caplog, started, "bench.rollout"))
    assert "rollout: took" in caplog.text and "generate: turn 1 of 2 took" in caplog.text
    out = capsys.readouterr().out
    assert "ratio" in out and "with 2 worker processes (async); the same episodes: yes" in out
    assert_ratio_of_rates(out)
    shares = [float(share) for share in re.findall(r"(-?[\d.]+)% (?:of|with)", out)]
    assert len(shares) == 3 and all(0 <= share <= 100 for share in shares)  # outside the model; env steps sync, async
    generated = [int(n) for n in re.findall(r"(\d+) tokens in", out)]
    assert len(generated) == 2 and all(0 < n <= 2 * 2 * 3 for n in generated)  # new tokens only: at most the caps


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
    tokens, per_minute, per_second = re.search(r"(\d+) tokens written.*\n.* ([\d.]+) proposals/min.* ([\d.]+) tokens/s",
                                               out).groups()
    per_second, per_minute = float(per_second), float(per_minute)  # both over the wall time, each to 0.05
    low, high = (120 * (per_second + delta) / int(tokens) for delta in (-0.05, 0.05))
    assert low - 0.05 <= per_minute <= high + 0.05
    shares = re.search(r"generation ([\d.]+)%, tools ([\d.]+)%, sandbox \(parse and filter\) ([\d.]+)%, other "
                       r"(-?[\d.]+)%", out).groups()
    assert sum(map(float, shares)) == pytest.approx(100, abs=0.3)  # the shares split the wall time


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


def test_full_takes_the_long_sizes_and_a_size_given_alone_wins_over_either():
    """``--full`` (make bench FULL=1) must change what is measured, a size given alone must win over both, and the
    smallest size a flag allows (1) must be accepted, not only refused below it."""
    from bench import rollout

    parser = argparse.ArgumentParser()
    bench.add_model_arguments(parser, rollout.QUICK, rollout.FULL, bench.EPISODES_HELPS)

    def sizes(*argv: str) -> bench.Episodes:
        return bench.chosen_sizes(parser.parse_args(argv), rollout.QUICK, rollout.FULL)

    assert rollout.QUICK != rollout.FULL
    assert sizes() == rollout.QUICK and sizes("--full") == rollout.FULL
    assert sizes("--full", "--turns", "5") == replace(rollout.FULL, turns=5)
    assert sizes("--cap", "1") == replace(rollout.QUICK, cap=1)


def test_python_m_bench_reports_a_failed_benchmark_and_gathers_only_the_ratio_lines(monkeypatch, capsys):
    """Without --only every benchmark runs, each with its quick or --full arguments; a failed one is named with its
    exit code and makes the exit code 1, the others still reported; the summary repeats each ratio line a child
    printed (one after a progress bar's carriage return too), but not a log line that mentions a ratio."""
    outputs = {"sandbox": (3, "12:00:01 bench.sandbox: the ratio so far 3.0x\n    local / naive  12.0x (1 caller)\n"),
               "rollout": (0, "turn 1 of 3\rratio     2.00x  (target >= 0.85x)\n")}
    commands: dict[str, list[str]] = {}

    def relay(command: list[str], what: str) -> tuple[int, str]:
        commands[command[2].removeprefix("bench.")] = command[3:]
        return outputs.get(command[2].removeprefix("bench."), (0, ""))

    monkeypatch.setattr(bench_main, "relay", relay)
    assert bench_main.main([]) == 1
    out = capsys.readouterr().out
    assert list(commands) == [b.name for b in bench_main.BENCHMARKS]
    assert commands["sandbox"] == ["--seconds", "1.5", "--rounds", "3"] and commands["rollout"] == []
    summary = out[out.index("== bench summary (quick sizes)"):]
    assert re.search(r"^bench\.sandbox: [\d.]+ min  FAILED \(exit code 3\)$", summary, re.MULTILINE)
    assert re.search(r"^bench\.rollout: [\d.]+ min$", summary, re.MULTILINE)
    assert "\n    local / naive  12.0x (1 caller)\n" in summary
    assert "\n    ratio     2.00x  (target >= 0.85x)\n" in summary
    assert "the ratio so far" not in summary and "turn 1 of 3" not in summary
    commands.clear()
    assert bench_main.main(["--full", "--only", "sandbox", "rollout"]) == 1
    assert commands == {"sandbox": [], "rollout": ["--full"]}
    assert "== bench summary (full sizes)" in capsys.readouterr().out


def test_bench_train_reports_medians_rates_and_ratios_over_every_round(monkeypatch, capsys):
    """An engine's rate is all its tokens over all its seconds, its step time the median step, its memory the largest
    peak, every round counted; the ratios are ours over TRL, so that above 1 means ours is faster (the target)."""
    from bench import train

    passes = {"ours": iter([{"times": [1.0, 3.0], "tokens": [100, 100], "peak_memory_gib": 2.0, "generation_s": 0.5,
                             "update_s": 0.5},
                            {"times": [2.0, 2.0], "tokens": [100, 300], "peak_memory_gib": 3.0, "generation_s": 1.5,
                             "update_s": 0.5}]),
              "trl": iter([{"times": [4.0, 4.0], "tokens": [100, 100], "peak_memory_gib": 6.0},
                           {"times": [6.0, 6.0], "tokens": [100, 100], "peak_memory_gib": 4.0}])}
    monkeypatch.setattr(train, "check_model", lambda parser, args: None)
    monkeypatch.setattr(train, "in_subprocess", lambda engine, kind, steps, model, device: next(passes[engine]))
    train.main(["--rounds", "2", "--steps", "2", "--device", "cuda"])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1] in (["ours"], ["trl"])}
    assert rows == {"ours": ["2.0", "75.0", "3.00"], "trl": ["5.0", "20.0", "6.00"]}  # 600 tokens / 8 s, 400 / 20 s
    assert "peak GPU GiB" in out and "2 rounds x 2 steps" in out
    assert "ours: generation 1.0 s, update 0.5 s a step (medians)" in out
    assert "ratio ours/TRL, completion tokens/s: 3.75 (target >= 1.0); peak memory ours/TRL: 0.50" in out


def test_a_device_the_machine_lacks_exits_2_before_anything_runs_and_a_failed_engine_stops_bench_train(
        monkeypatch, capsys):
    """``--device cuda`` without a GPU ends a model benchmark as a bad flag does (exit code 2) before a model loads or
    an engine's process starts; an engine's process that fails ends bench.train with its exit code, not with a parse
    error of its empty output."""
    import subprocess

    from bench import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    in_subprocess = train.in_subprocess
    monkeypatch.setattr(train, "in_subprocess", lambda *_: pytest.fail("an engine started"))
    for module in ("train", "rollout", "policy", "challenger"):
        with pytest.raises(SystemExit) as exit_:
            importlib.import_module(f"bench.{module}").main(["--device", "cuda"])
        assert exit_.value.code == 2 and "sees no CUDA device" in capsys.readouterr().err, module
    ran = []
    monkeypatch.setattr(train.subprocess, "run", lambda command, **_: (
        ran.append(command), subprocess.CompletedProcess(command, 3, stdout=""))[1])
    with pytest.raises(SystemExit) as exit_:
        in_subprocess("trl", "short", 1, "some/model", "cpu")
    assert exit_.value.code == 3 and ran[0][ran[0].index("--engine") + 1] == "trl"


def test_generate_replays_each_turns_prompts_left_padded_and_counts_up_to_the_end_token():
    """The baseline gets the prompts our rollout saw, turn by turn (an episode that ended sits out its later turns),
    left-padded with a mask; a row's tokens count up to and including its first end token, else all of them."""
    from types import SimpleNamespace

    from agents.decoding import SamplingSettings
    from bench.rollout import generate_same_turns

    pad, eos, seen = 0, 9, []

    class Model:
        device = torch.device("cpu")

        def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: object) -> torch.Tensor:
            seen.append((input_ids.tolist(), attention_mask.tolist()))
            new = torch.tensor([[5, eos, 7], [5, 6, 7]][:len(input_ids)])
            return torch.cat([input_ids, new], dim=1)

    two = SimpleNamespace(token_ids=[1, 2, 3, 4, 5, 6], turn_starts=[2, 5], num_turns=2)
    one = SimpleNamespace(token_ids=[3, 4, 5], turn_starts=[1], num_turns=1)
    tokens, _ = generate_same_turns(Model(), pad, eos, [two, one], SamplingSettings(temperature=0.0, max_new_tokens=3),
                                    turns=3)
    assert seen == [([[1, 2], [0, 3]], [[1, 1], [0, 1]]), ([[1, 2, 3, 4, 5]], [[1, 1, 1, 1, 1]])]
    assert tokens == 2 + 3 + 2  # up to the end token, a row without one, then the second turn's row


def test_bench_policy_plays_each_turn_on_the_chat_so_far():
    """Each turn both players get the chats with the earlier replies and tool results (a growing chat is what
    re-encoding pays for); the tokens counted are the replies' own."""
    from bench.policy import play

    tokenizer = load_tokenizer()
    lengths = []

    def generate(chats: list[list[dict]]) -> list[str]:
        lengths.append([len(chat) for chat in chats])
        return [f"reply {i}" for i in range(len(chats))]

    replies, tokens, _ = play("fake", generate, tokenizer, bench.Episodes(episodes=2, turns=3, cap=4))
    assert lengths == [[2, 2], [4, 4], [6, 6]]
    assert replies == [["reply 0"] * 3, ["reply 1"] * 3]
    assert tokens == 3 * sum(len(tokenizer(f"reply {i}", add_special_tokens=False)["input_ids"]) for i in range(2))


def test_a_rate_counts_every_callers_calls_and_at_least_min_calls_each():
    """Even when the time is up at once, each caller makes its ``min_calls`` calls, and all of them count."""
    from bench.sandbox import rate

    calls = []
    assert rate(lambda: calls.append(1), 0.0, threads=2, min_calls=3) > 0 and len(calls) == 6


def test_bench_sandbox_prints_each_ratio_as_faster_over_baseline_and_leaves_out_docker(capsys):
    """With --no-docker the docker ratio is left out, not a KeyError; each ratio printed is the sandbox's best rate
    over the baseline's, and the pool size given is the one used."""
    from bench import sandbox

    best = sandbox.main(["--seconds", "0.01", "--rounds", "1", "--workers", "1", "--no-docker"])
    out = capsys.readouterr().out
    assert set(best) == {(name, t) for name in ("local", "naive", "naive -I -S") for t in (1, 2)}
    assert "local (1 workers)" in out and "docker" not in out
    for baseline in ("naive", "naive -I -S"):
        ratios = re.search(rf"local / {re.escape(baseline)} +([\d.]+)x \(1 caller\) +([\d.]+)x \(2 callers\)", out)
        for threads, printed in ((1, ratios[1]), (2, ratios[2])):
            assert float(printed) == pytest.approx(best["local", threads] / best[baseline, threads], abs=0.06)


def test_the_parsers_baseline_finds_the_first_object_after_braces_that_open_none():
    """The baseline of bench.envs' parse comparison tries the decoder at each ``{`` in turn, as the parser once did."""
    from bench.envs import _decode_at_every_brace

    assert _decode_at_every_brace('call {oops {"a": {"b": 1}} {"c": 2}') == {"a": {"b": 1}}
    assert _decode_at_every_brace("{{{ no object") is None


def test_bench_envs_compares_with_tau_bench_only_when_its_data_is_found(monkeypatch, tmp_path, capsys):
    """Without tau-bench's data the comparison is skipped, saying so; with it, it reads DIR/data/retail."""
    from bench import envs

    compared = []
    monkeypatch.setattr(envs, "actions", lambda: None)
    monkeypatch.setattr(envs, "tool_steps", lambda: None)
    monkeypatch.setattr(envs, "taubench_retail", compared.append)
    envs.main(["--taubench-data", str(tmp_path)])
    assert compared == [tmp_path / "data" / "retail"]
    monkeypatch.setattr(envs, "shared_dir", lambda: None)
    envs.main([])
    assert compared == [tmp_path / "data" / "retail"] and "tau-bench data not found" in capsys.readouterr().out


def test_the_forward_clock_adds_up_every_forward_pass():
    """The rollout's "outside the model" share and the challenger's "generation" share rest on the sum of the
    seconds of all forward passes, not the last one's."""
    from bench.rollout import ForwardClock

    class Slow(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.02)
            return x

    model = Slow()
    clock = ForwardClock(model)
    for _ in range(3):
        model(torch.zeros(1))
    assert clock.seconds >= 0.06
