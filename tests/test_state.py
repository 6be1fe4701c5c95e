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
