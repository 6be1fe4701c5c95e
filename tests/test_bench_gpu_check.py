"""The GPU check (bench/gpu_check.sh, python -m bench.gpu_check) on the CPU with tiny shapes: from a pack
holding only the tokenizer, as on a GPU machine without network, through every phase to one summary."""

from __future__ import annotations

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
