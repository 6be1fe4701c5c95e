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


def test_the_script_without_a_pack_says_how_to_make_one(tmp_path):
    done = run(str(tmp_path))
    assert done.returncode == 2
    assert "python -m bench.gpu_check --pack" in done.stderr
