"""The GPU check (bench/gpu_check.sh, python -m bench.gpu_check) on the CPU with tiny shapes: from a pack
holding only the tokenizer, as on a GPU machine without network, through every phase to one summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pack")
    subprocess.run([sys.executable, "-m", "bench.gpu_check", "--pack", str(folder), "--no-wheels"], cwd=ROOT,
                   check=True, capture_output=True)
    assert (folder / "tokenizer" / "tokenizer.json").is_file()
    return folder


@pytest.mark.slow
def test_the_check_runs_every_phase_on_tiny_shapes_and_prints_one_summary(pack, tmp_path):
    out = tmp_path / "out"
    done = run(str(pack), "--device", "cpu", "--batch", "2", "--new-tokens", "6", "--bench", "rollout",
               "--out", str(out))  # the train phase at its CPU sizes
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    assert summary in done.stdout  # printed at the end, as written
    decode = re.search(r"decode: (\d+) steps in [\d.]+ s = \*\*([\d.]+) ms a step\*\*, (\d+) tokens/s", summary)
    assert decode and int(decode[1]) == 5 and float(decode[2]) > 0 and int(decode[3]) > 0  # 6 tokens: 5 forwards
    assert re.search(r"profiled 20 steps: [\d.]+ ms a step", summary)
    assert "aten::" in (out / "profile.txt").read_text()
    rl = re.search(r"RL, 1 step: rollout (\d+) completion tokens/s, update (\d+) tokens/s", summary)
    assert rl and int(rl[1]) > 0 and int(rl[2]) > 0  # every episode in the update, though all rewards are 0
    for stage in ("tasks", "warm_start", "eval_warm_start", "rl", "eval_rl"):
        assert re.search(rf"^- {stage}: [\d.]+ s, [\d.]+ GiB$", summary, re.MULTILINE), stage
    assert re.search(r"^- ratio +[\d.]+x", summary, re.MULTILINE)  # bench.rollout's ratio, from bench's summary
    assert "FAILED" not in summary


@pytest.mark.slow
def test_a_failing_phase_is_reported_and_the_check_exits_1(pack, tmp_path):
    out = tmp_path / "out"
    done = run(str(pack), "--device", "cpu", "--batch", "1", "--new-tokens", "2", "--train-set",
               f"pool={tmp_path / 'missing.jsonl'}", "--skip", "bench", "--out", str(out))
    assert done.returncode == 1
    summary = (out / "summary.md").read_text()
    assert "ms a step" in summary  # the decode phase before it still reported
    assert re.search(r"## train, tiny shape .*\n- \*\*FAILED\*\*: RuntimeError: python -m train exited with code 2",
                     summary)
    assert "missing.jsonl" in (out / "train.log").read_text()  # train's own message names the file


@pytest.mark.parametrize("argv, problem", [
    (["--train-set", "steps=-1"], "--train-set: config key 'steps'"),
    (["--train-set", "stepz=1"], "--train-set: config key 'stepz': unknown key"),
    (["--bench", "rollout", "nope"], "argument --bench: invalid choice: 'nope'"),
    (["--batch", "0"], "argument --batch: must be at least 1, got 0"),
])
def test_a_bad_flag_exits_2_before_any_phase_spends_gpu_time(argv, problem, tmp_path, capsys):
    from bench.gpu_check import main
    with pytest.raises(SystemExit) as exit_:
        main(["--device", "cpu", "--out", str(tmp_path / "out"), *argv])
    assert exit_.value.code == 2 and problem in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [[], ["--device", "cuda"]])
def test_on_a_gpu_machine_the_check_takes_the_real_shapes_whether_asked_for_cuda_or_left_to_pick(
        argv, monkeypatch, tmp_path):
    """The README's command passes no --device: ``auto`` finding the GPU must mean the GPU's sizes."""
    import torch

    from bench import gpu_check

    built = []

    def build_model(shape: str, tokenizer: object, device: torch.device) -> None:
        built.append((shape, device.type))
        raise RuntimeError("no GPU here")  # the phase fails; the check goes on to its summary

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("agents.models.pick_device", lambda choice=None: torch.device("cuda"))
    monkeypatch.setattr(gpu_check, "machine", lambda device: ["a GPU"])
    monkeypatch.setattr(gpu_check, "build_model", build_model)
    assert gpu_check.main([*argv, "--skip", "train", "bench", "--out", str(tmp_path)]) == 1
    assert built == [("smollm2-1.7b", "cuda")]


def test_a_python_below_setup_cfgs_requirements_exits_2_before_any_phase(monkeypatch, tmp_path, capsys):
    from bench import gpu_check
    setup_cfg = tmp_path / "setup.cfg"
    setup_cfg.write_text("[options]\ninstall_requires =\n    torch>=2.6\n    transformers>=99\n")
    monkeypatch.setattr(gpu_check, "SETUP_CFG", setup_cfg)
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main(["--device", "cpu", "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "transformers>=99: " in error and "--pack" in error and "torch" not in error
    assert not (tmp_path / "out").exists()


def test_a_carried_package_missing_is_named_at_the_top_of_the_summary(monkeypatch, tmp_path, capsys):
    from bench import gpu_check
    monkeypatch.setattr(gpu_check, "CARRIED", ("peft", "no-such-carried-package"))
    assert gpu_check.main(["--device", "cpu", "--skip", "decode", "train", "bench", "--out", str(tmp_path)]) == 0
    summary = capsys.readouterr().out
    header = summary[:summary.index("unmet: ")]
    assert header.startswith("\n# GPU check\n\nCPU; torch ") and "##" not in header
    assert summary.count("unmet: ") == 1 and "unmet: no-such-carried-package: not installed\n" in summary


def test_a_pack_made_again_holds_only_the_new_wheels(monkeypatch, tmp_path):
    from bench import gpu_check
    versions = iter(["1.0", "2.0"])

    def download(command, **_):
        dest = Path(command[command.index("--dest") + 1])
        dest.mkdir(parents=True)
        (dest / f"peft-{next(versions)}-py3-none-any.whl").write_bytes(b"")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(gpu_check.subprocess, "run", download)
    monkeypatch.setattr(gpu_check, "CARRIED", ("peft",))  # installed by make test too (trl only for the benchmarks)
    for _ in range(2):
        gpu_check.pack(tmp_path / "pack", "3.12", wheels=True)
    assert sorted(p.name for p in (tmp_path / "pack" / "wheels").iterdir()) == ["peft-2.0-py3-none-any.whl"]
    assert sorted(p.name for p in (tmp_path / "pack").iterdir()) == ["tokenizer", "wheels"]


def test_a_pack_from_an_install_without_a_carried_package_says_what_to_install(monkeypatch, tmp_path):
    from bench import gpu_check
    monkeypatch.setattr(gpu_check, "CARRIED", ("peft", "no-such-carried-package"))
    with pytest.raises(SystemExit, match=r"lacks no-such-carried-package: not installed: install the benchmarks'"):
        gpu_check.pack(tmp_path / "pack", "3.12", wheels=True)
    assert not (tmp_path / "pack").exists()


def test_the_script_without_a_pack_says_how_to_make_one(tmp_path):
    done = run(str(tmp_path))
    assert done.returncode == 2
    assert "python -m bench.gpu_check --pack" in done.stderr


@pytest.mark.parametrize("cuda", [True, False])
def test_each_phase_gets_the_machines_default_shapes_and_sizes_when_none_is_given(cuda, monkeypatch, tmp_path):
    """No flags but --out, as the README runs it: a GPU machine decodes the 1.7B shape on 32 chats of up to 256
    tokens and trains and benches the 135M one at gpu_check.yaml's sizes; a CPU the tiny shape, 4 chats of 16, and
    trains at the CPU's sizes, a --train-set key after them. The train and bench phases' model is built on the CPU
    (their own processes move it to the device)."""
    import torch

    from bench import gpu_check

    calls: dict[str, object] = {"built": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(gpu_check, "machine", lambda device: ["a machine"])
    monkeypatch.setattr(gpu_check, "build_model", lambda shape, tokenizer, device: (
        calls["built"].append((shape, device.type)), shape)[1])
    monkeypatch.setattr(gpu_check, "with_training_adapter", lambda model: model)
    monkeypatch.setattr(gpu_check, "decode", lambda result, model, tokenizer, batch, new_tokens, out, gpu: calls.update(
        decode=(model, batch, new_tokens)))
    monkeypatch.setattr(gpu_check, "save_model", lambda model, tokenizer, path: path)
    monkeypatch.setattr(gpu_check, "train", lambda result, model_dir, device, settings, work, out: calls.update(
        train=(model_dir.name, device, settings)))
    monkeypatch.setattr(gpu_check, "bench", lambda result, model_dir, device, only, out: calls.update(
        bench=(model_dir.name, device, only)))
    assert gpu_check.main(["--train-set", "seed=1", "--out", str(tmp_path)]) == 0
    device, decode_shape, shape = ("cuda", "smollm2-1.7b", "smollm2-135m") if cuda else ("cpu", "tiny", "tiny")
    assert calls["built"] == [(decode_shape, device), (shape, "cpu")]
    assert calls["decode"] == ((decode_shape, 32, 256) if cuda else (decode_shape, 4, 16))
    assert calls["train"] == (shape, device, ["seed=1"] if cuda else [*gpu_check.CPU_TRAINING, "seed=1"])
    assert calls["bench"] == (shape, device, ())


@pytest.mark.parametrize("device, memory", [("cpu", "the process's resident peak so far"),
                                            ("cuda", "GPU allocations since it began")])
def test_the_train_phase_reports_rl_speeds_and_each_stages_peak_from_trains_metrics(device, memory, monkeypatch,
                                                                                     tmp_path):
    """Rollout tokens/s are completion tokens over rollout seconds and update tokens/s scored tokens over update
    seconds, both summed over the RL steps only; the stages' rows follow, and what their peak memory means."""
    from bench import gpu_check

    rows = [{"phase": "rl", "rollout_s": 2.0, "update_s": 1.0, "completion_tokens": 300, "loss_tokens": 90},
            {"phase": "rl", "rollout_s": 4.0, "update_s": 3.0, "completion_tokens": 300, "loss_tokens": 110},
            {"phase": "eval", "rollout_s": 50.0, "update_s": 0.0, "completion_tokens": 1, "loss_tokens": 0},
            {"phase": "stage", "stage": "rl", "seconds": 12.34, "peak_memory_gib": 1.5}]

    def relay(command: list[str], what: str) -> tuple[int, str]:
        runs = Path(next(part for part in command if part.startswith("runs_dir=")).partition("=")[2])
        (runs / "gpu-check").mkdir(parents=True)
        (runs / "gpu-check" / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        return 0, "trained\n"

    monkeypatch.setattr(gpu_check, "relay", relay)
    result = gpu_check.Phase("train")
    gpu_check.train(result, tmp_path / "model", device, [], tmp_path, tmp_path)
    assert result.lines == ["RL, 2 steps: rollout 100 completion tokens/s, update 50 tokens/s (tokens with a loss), "
                            "rollout 60% of the steps' time",  # 600 tokens in 6 s, 200 in 4 s; 6 s of 10
                            f"each stage's seconds and peak memory: {memory}", "rl: 12.3 s, 1.50 GiB"]
    assert (tmp_path / "train.log").read_text() == "trained\n"


def test_the_train_phase_fails_with_trains_exit_code_and_keeps_its_log(monkeypatch, tmp_path):
    from bench import gpu_check

    monkeypatch.setattr(gpu_check, "relay", lambda command, what: (2, "unknown key\n"))
    with pytest.raises(RuntimeError, match=r"python -m train exited with code 2 \(train.log\)"):
        gpu_check.train(gpu_check.Phase("train"), tmp_path / "model", "cpu", [], tmp_path, tmp_path)
    assert (tmp_path / "train.log").read_text() == "unknown key\n"


def test_the_bench_phase_keeps_the_lines_of_benchs_summary_and_fails_with_it(monkeypatch, tmp_path):
    """The phase's lines are those after bench's summary heading (each benchmark's time and ratios), not the heading;
    ``--only`` goes to bench only with names after it, and bench's failure fails the phase, its lines kept."""
    from bench import gpu_check

    output = ("bench.rollout's own output, ratio 9.99x\n== bench summary (quick sizes)\nbench.rollout: 1.0 min\n"
              "    ratio     2.00x  (target >= 0.85x)\ntotal: 1.0 min\n")
    commands, codes = [], iter([0, 1])
    monkeypatch.setattr(gpu_check, "relay", lambda command, what: (commands.append(command), (next(codes), output))[1])
    kept = ["bench.rollout: 1.0 min", "ratio     2.00x  (target >= 0.85x)", "total: 1.0 min"]
    result = gpu_check.Phase("bench")
    gpu_check.bench(result, tmp_path / "model", "cpu", (), tmp_path)
    assert result.lines == kept and "--only" not in commands[0]
    result = gpu_check.Phase("bench")
    with pytest.raises(RuntimeError, match=r"python -m bench exited with code 1"):
        gpu_check.bench(result, tmp_path / "model", "cpu", ("rollout",), tmp_path)
    assert result.lines == kept and commands[1][-2:] == ["--only", "rollout"]
    assert (tmp_path / "bench.log").read_text() == output


def test_the_script_installs_the_packs_wheels_apart_and_runs_the_check_offline_on_the_packs_tokenizer(tmp_path):
    """What a GPU machine runs: pip puts the pack's wheels into a folder of their own, which heads PYTHONPATH for the
    check; the check gets the pack's tokenizer (such a machine has no embedded model) and never the network."""
    pack, calls, python = tmp_path / "pack", tmp_path / "calls", tmp_path / "python"
    (pack / "tokenizer").mkdir(parents=True)
    (pack / "wheels").mkdir()
    (pack / "wheels" / "peft-1.0-py3-none-any.whl").write_bytes(b"")
    python.write_text(f'#!/bin/sh\necho "${{PYTHONPATH:-}}|${{HF_HUB_OFFLINE:-}}|${{TRANSFORMERS_OFFLINE:-}}|$*" '
                      f'>> {calls}\n')
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    done = subprocess.run([str(SCRIPT), str(pack), "--device", "cpu"], cwd=ROOT,
                          env={**env, "PYTHON": str(python), "TMPDIR": str(tmp_path)}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    install, check = (line.split("|")[3] for line in calls.read_text().splitlines())
    site = install.split(" --target ")[1].split()[0]
    assert install.startswith("-m pip install ") and " --no-index " in install
    assert install.endswith(f" {pack}/wheels/peft-1.0-py3-none-any.whl")
    path, hub_offline, transformers_offline, argv = calls.read_text().splitlines()[1].split("|")
    assert path == site and hub_offline == transformers_offline == "1"  # exported, though unset before
    assert argv == f"-m bench.gpu_check --tokenizer {pack}/tokenizer --device cpu"
