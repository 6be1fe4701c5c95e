import copy

import pytest

from envs.state import canonical_json, fork, make_base, state_hash, to_plain

DATA = {"users": {"a": {"n": 1, "tags": ["x"]}, "b": {"n": 2, "tags": []}}, "clock": {"t": 0}}


def base():
    return make_base(DATA, ("users",))


def test_fresh_fork_hashes_like_its_base_and_like_the_plain_data():
    b = base()
    assert state_hash(fork(b)) == state_hash(b)
    assert to_plain(fork(b)) == DATA


def test_writes_change_the_hash_and_undoing_them_restores_it():
    b = base()
    s = fork(b)
    h0 = state_hash(s)
    s["users"]["a"]["tags"].append("y")
    h1 = state_hash(s)
    assert h1 != h0
    s["users"]["a"]["tags"].pop()
    assert state_hash(s) == h0


def test_hash_does_not_depend_on_how_the_state_was_reached():
    b = base()
    s1, s2 = fork(b), fork(b)
    s1["users"]["c"] = {"n": 3, "tags": []}
    s1["clock"]["t"] = 5
    s2["clock"]["t"] = 5
    s2["users"]["c"] = {"tags": [], "n": 3}
    assert state_hash(s1) == state_hash(s2)


def test_forks_are_isolated_from_each_other_and_from_the_base():
    b = base()
    s1, s2 = fork(b), fork(b)
    s1["users"]["a"]["n"] = 100
    del s1["users"]["b"]
    s1["clock"]["t"] = 9
    assert s2["users"]["a"]["n"] == 1 and "b" in s2["users"] and s2["clock"]["t"] == 0
    assert b["users"].records == DATA["users"]
    assert sorted(s1["users"]) == ["a"] and len(s1["users"]) == 1


def test_changed_reports_only_real_differences():
    s = fork(base())
    s["users"]["a"]  # fetched for writing but left alone
    s["users"]["b"]["n"] = 7
    s["users"]["c"] = {"n": 3}
    del s["users"]["a"]
    assert s["users"].changed() == {"a": None, "b": {"n": 7, "tags": []}, "c": {"n": 3}}


def test_a_lone_surrogate_in_a_record_or_a_plain_value_hashes_apart_from_its_escape():
    """A JSON escape in a tool's arguments ("\\ud800") puts a lone surrogate in the state: it hashes, as
    something other than the six characters of its escape."""
    hashes = set()
    for text in ("INV-\ud800", "INV-\\ud800", "INV-x"):
        s = fork(base())
        s["users"]["a"]["tags"].append(text)
        s["clock"]["label"] = text
        hashes.add(state_hash(s))
    assert len(hashes) == 3


def test_a_record_added_or_deleted_and_added_again_is_in_the_table_like_any_other():
    s = fork(base())
    del s["users"]["a"]
    s["users"]["a"] = {"n": 5, "tags": []}
    s["users"]["c"] = {"n": 3, "tags": []}
    users = {"a": {"n": 5, "tags": []}, "b": DATA["users"]["b"], "c": {"n": 3, "tags": []}}
    assert sorted(s["users"]) == ["a", "b", "c"] and len(s["users"]) == 3 and dict(s["users"].items()) == users
    assert to_plain(s)["users"] == users


def test_a_table_inside_a_plain_value_writes_as_its_records():
    s = fork(base())
    s["users"]["c"] = {"n": 3, "tags": []}
    plain = to_plain(s)["users"]
    assert canonical_json({"nested": [s["users"]]}) == canonical_json({"nested": [plain]})


NESTED = {"users": {"a": {"n": 1, "tags": [{"t": "x"}]}}, "meta": {"owner": {"name": "m"}, "history": [{"v": 1}]}}


def test_a_nested_write_in_one_fork_reaches_neither_the_base_nor_another_fork():
    b = make_base(copy.deepcopy(NESTED), ("users",))  # a base holds the data it is given
    s1, s2 = fork(b), fork(b)
    s1["users"]["a"]["tags"][0]["t"] = "changed"
    s1["users"]["a"]["tags"].append({"t": "y"})
    s1["meta"]["owner"]["name"] = "changed"
    s1["meta"]["history"][0]["v"] = 2
    assert to_plain(s2) == NESTED and to_plain(fork(b)) == NESTED
    assert b["users"].records == NESTED["users"] and b["meta"] == NESTED["meta"]


def test_a_deleted_record_is_gone_for_every_way_of_reading_it():
    s = fork(make_base({"users": {"a": {"n": 1}, "b": {"n": 2}}}, ("users",)))
    users = s["users"]
    del users["a"]
    assert "a" not in users and users.get_readonly("a") is None and users.get("a") is None
    with pytest.raises(KeyError):
        users["a"]
    with pytest.raises(KeyError):
        del users["a"]  # as a dict: a second delete is an error
    with pytest.raises(KeyError):
        del users["zzz"]
    assert list(users) == ["b"] and len(users) == 1


def test_a_record_added_then_deleted_leaves_the_table_as_it_was():
    b = make_base({"users": {"a": {"n": 1}}}, ("users",))
    s = fork(b)
    s["users"]["new"] = {"n": 2}
    del s["users"]["new"]
    assert list(s["users"]) == ["a"] and len(s["users"]) == 1 and "new" not in s["users"]
    assert state_hash(s) == state_hash(b) and s["users"].changed() == {}


def test_a_table_count_counts_records_fetched_for_writing_once():
    s = fork(make_base({"users": {"a": {"n": 1}, "b": {"n": 2}}}, ("users",)))
    s["users"]["a"]["n"] = 5
    s["users"]["c"] = {"n": 3}
    assert len(s["users"]) == 3 == len(list(s["users"]))


def test_the_hash_does_not_depend_on_the_order_of_the_states_top_level_names():
    one = make_base({"clock": {"t": 0}, "users": {"a": {"n": 1}}}, ("users",))
    other = make_base({"users": {"a": {"n": 1}}, "clock": {"t": 0}}, ("users",))
    assert state_hash(fork(one)) == state_hash(fork(other)) == state_hash(one)


def test_a_set_in_the_state_writes_as_its_sorted_items():
    assert canonical_json({"s": {3, 1, 2}}) == canonical_json({"s": [1, 2, 3]})
    assert canonical_json({"s": frozenset({"b", "a"})}) == '{"s":["a","b"]}'


def test_a_record_fetched_for_writing_but_left_alone_is_no_change():
    s = fork(make_base({"users": {"a": {"n": 1}}}, ("users",)))
    s["users"]["a"]
    assert s["users"].changed() == {}


def test_distinct_lone_surrogates_hash_apart_and_apart_from_a_question_mark():
    hashes = set()
    for text in ("\ud800", "\udfff", "?"):
        s = fork(make_base({"users": {"a": {"tags": []}}, "clock": {}}, ("users",)))
        s["users"]["a"]["tags"].append(text)
        hashes.add(state_hash(s))
    assert len(hashes) == 3
