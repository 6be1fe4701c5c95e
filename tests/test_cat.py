import json

import pytest

from envs.cat import Attempt, CatFormatError, CodeAsTask, ToolCall
from toy_domain import copy_task


def test_round_trip_through_json_keeps_every_field():
    task = copy_task(provenance={"challenger": "scripted"}, filter={"solution": "pass"})
    again = CodeAsTask.loads(task.dumps())
    assert again == task


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("verifier"), "verifier"),
    (lambda d: d.update(id=3), "id"),
    (lambda d: d.update(instruction="  "), "instruction"),
    (lambda d: d.update(world=[1]), "world"),
    (lambda d: d["solution"].update(actions="get_note"), "solution.actions"),
    (lambda d: d["failures"][1]["actions"][0].pop("name"), "failures[1].actions[0].name"),
    (lambda d: d["failures"][0]["actions"][0].update(arguments=[1]), "failures[0].actions[0].arguments"),
    (lambda d: d["failures"][2].update(answer=7), "failures[2].answer"),
    (lambda d: d.update(failures={}), "failures"),
])
def test_bad_field_is_named_in_the_error(mutate, field):
    data = copy_task().to_json()
    mutate(data)
    with pytest.raises(CatFormatError) as err:
        CodeAsTask.from_json(data)
    assert err.value.field == field
    assert str(err.value).startswith(field + ":")


def test_invalid_json_says_where():
    with pytest.raises(CatFormatError, match="not valid JSON"):
        CodeAsTask.loads('{"id": "x", ')


def test_attempt_json_shape_matches_the_design():
    attempt = Attempt((ToolCall("get_note", {"key": "k1"}),), "note 1")
    assert attempt.to_json() == {"actions": [{"name": "get_note", "arguments": {"key": "k1"}}], "answer": "note 1"}
    assert json.loads(copy_task().dumps())["failures"][0]["answer"] == "note 1"


@pytest.mark.parametrize("line", ["[1, 2]", '"a task"', "7"])
def test_a_record_that_is_not_an_object_is_a_format_error_naming_the_record(line):
    with pytest.raises(CatFormatError) as err:
        CodeAsTask.loads(line)
    assert err.value.field == "<record>"


def test_invalid_json_is_reported_against_the_whole_record():
    with pytest.raises(CatFormatError) as err:
        CodeAsTask.loads('{"id": "x", ')
    assert err.value.field == "<record>"


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.update(id=" "), "id"),
    (lambda d: d.update(domain=""), "domain"),
    (lambda d: d.update(verifier="\n  \n"), "verifier"),
    (lambda d: d["solution"]["actions"][0].update(name=" "), "solution.actions[0].name"),
    (lambda d: d.update(provenance=["scripted"]), "provenance"),
    (lambda d: d.update(filter="kept"), "filter"),
    (lambda d: d["failures"][2].update(answer=0), "failures[2].answer"),
])
def test_blank_or_mistyped_fields_are_named_in_the_error(mutate, field):
    data = copy_task().to_json()
    mutate(data)
    with pytest.raises(CatFormatError) as err:
        CodeAsTask.from_json(data)
    assert err.value.field == field


def test_optional_fields_take_their_defaults_when_absent():
    data = copy_task().to_json()
    del data["provenance"]
    data["failures"][0].pop("actions")
    data["solution"]["actions"][0].pop("arguments", None)
    data["solution"]["actions"][0].pop("parameters", None)
    task = CodeAsTask.from_json(data)
    assert task.provenance == {} and task.filter is None
    assert task.failures[0].actions == ()
    assert task.solution.actions[0].arguments == {}
