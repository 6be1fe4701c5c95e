import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from envs.pool import PoolError, append_pool, load_pool
from envs.records import RecordsError, append_jsonl, read_jsonl, write_atomic
from toy_domain import copy_task


def test_append_then_load_returns_the_tasks_in_order(tmp_path):
    pool = tmp_path / "pool.jsonl"
    tasks = [copy_task(id=f"t{i}") for i in range(5)]
    assert append_pool(pool, tasks[:2]) == 2
    append_pool(pool, tasks[2:])
    assert [t.id for t in load_pool(pool)] == [f"t{i}" for i in range(5)]


def test_truncated_last_line_is_skipped_with_a_warning_and_next_append_is_clean(tmp_path, caplog):
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [copy_task(id="a"), copy_task(id="b")])
    with open(pool, "ab") as f:  # a crash in the middle of writing a third line
        f.write(copy_task(id="c").dumps().encode()[:40])
    assert [t.id for t in load_pool(pool)] == ["a", "b"]
    assert "truncated last line" in caplog.text
    append_pool(pool, [copy_task(id="d")])
    assert [t.id for t in load_pool(pool)] == ["a", "b", "d"]


def test_a_whole_last_line_without_its_newline_is_kept_by_the_next_append(tmp_path):
    """A pool written by hand or by another tool may end without a newline: that task loads, and stays."""
    pool = tmp_path / "pool.jsonl"
    pool.write_text(copy_task(id="a").dumps() + "\n" + copy_task(id="b").dumps())
    assert [t.id for t in load_pool(pool)] == ["a", "b"]
    append_pool(pool, [copy_task(id="c")])
    assert [t.id for t in load_pool(pool)] == ["a", "b", "c"]


def test_an_append_the_disk_cannot_hold_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [copy_task(id="a")])
    before = pool.read_bytes()
    write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: write(fd, data[:100]))  # what a full disk gives
    with pytest.raises(OSError, match="short write"):
        append_pool(pool, [copy_task(id="b", instruction="x" * 500)])
    assert pool.read_bytes() == before


def test_a_bad_line_in_the_middle_names_the_line_and_field(tmp_path):
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [copy_task(id="a")])
    with open(pool, "a") as f:
        f.write('{"id": "b"}\n')
    append_pool(pool, [copy_task(id="c")])
    with pytest.raises(PoolError, match=r"pool.jsonl:2: domain: is missing"):
        load_pool(pool)


def test_filtering_by_domain(tmp_path):
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [copy_task(id="a"), copy_task(id="b", domain="other")])
    assert [t.id for t in load_pool(pool, domain="toy")] == ["a"]


def test_a_killed_writer_never_corrupts_earlier_lines(tmp_path):
    """SIGKILL a process that appends in a loop: every complete line still loads."""
    pool = tmp_path / "pool.jsonl"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from envs.pool import append_pool
        from toy_domain import copy_task
        i = 0
        while True:
            append_pool({str(pool)!r}, [copy_task(id=f"t{{i}}", instruction="x" * 5000)])
            i += 1
            if i == 20:
                print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=os.getcwd())
    assert proc.stdout.readline().strip() == b"ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    tasks = load_pool(pool)
    assert len(tasks) >= 20
    assert [t.id for t in tasks] == [f"t{i}" for i in range(len(tasks))]


def test_missing_pool_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pool(tmp_path / "nope.jsonl")


def test_a_metrics_style_file_reads_back_and_names_a_bad_middle_line(tmp_path):
    from envs.records import RecordsError, append_jsonl, read_jsonl

    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, [{"step": 1}, {"step": 2}])
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    with open(path, "a") as f:
        f.write("{oops\n")
    append_jsonl(path, [{"step": 3}])
    with pytest.raises(RecordsError, match=r"metrics.jsonl:3: not valid JSON"):
        read_jsonl(path)


# --- bad task files fail loudly, naming the file and line ------------------------------------

def _pool_with(tmp_path, middle: bytes):
    """A pool whose second line is ``middle`` between two sound tasks."""
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [copy_task(id="a")])
    with open(pool, "ab") as f:
        f.write(middle + b"\n")
    append_pool(pool, [copy_task(id="c")])
    return pool


def test_a_line_that_is_not_utf8_is_an_error_naming_the_file_and_line(tmp_path):
    line = copy_task(id="b", verifier="def verify(state, answer):\n    return answer == 'caf\u00e9'\n").dumps()
    pool = _pool_with(tmp_path, line.encode("utf-8").replace("é".encode(), b"\xe9"))  # Latin-1, not UTF-8
    with pytest.raises(PoolError, match=r"pool.jsonl:2: not valid UTF-8: byte 0xe9"):
        load_pool(pool)


def test_a_last_line_cut_inside_a_character_is_a_crash_tail_not_an_error(tmp_path, caplog):
    pool = tmp_path / "pool.jsonl"
    append_pool(pool, [copy_task(id="a")])
    with open(pool, "ab") as f:
        f.write(copy_task(id="b", instruction="caf\u00e9 " * 20).dumps().encode()[:60] + "é".encode()[:1])
    assert [t.id for t in load_pool(pool)] == ["a"]
    assert "truncated last line" in caplog.text


def test_a_repeated_task_id_is_an_error_naming_both_lines_unless_deduplicated(tmp_path, caplog):
    pool = _pool_with(tmp_path, copy_task(id="a", instruction="another task").dumps().encode())
    with pytest.raises(PoolError, match=r"pool.jsonl:2: task id 'a' is already on line 1"):
        load_pool(pool)
    tasks = load_pool(pool, dedupe=True)
    assert [(t.id, t.instruction) for t in tasks] == [("a", copy_task().instruction), ("c", copy_task().instruction)]
    assert "leaving out a second task 'a'" in caplog.text


def test_a_verifier_that_does_not_compile_is_rejected_with_the_task_id_and_line(tmp_path):
    broken = copy_task(id="b", verifier="def verify(state, answer):\n    return (answer ==\n")
    pool = _pool_with(tmp_path, broken.dumps().encode())
    with pytest.raises(PoolError, match=r"pool.jsonl:2: task 'b': its verifier does not compile: .* \(verifier line 2\)"):
        load_pool(pool)


def test_json_past_pythons_limits_is_an_error_naming_the_line(tmp_path):
    pool = _pool_with(tmp_path, b'{"id": "b", "domain": "toy", "world": {"n": ' + b"9" * 5000 + b"}}")
    with pytest.raises(PoolError, match=r"pool.jsonl:2: .*4300 digits"):
        load_pool(pool)


@pytest.mark.parametrize("expression, error", [("1+" * 100_000 + "1", "maximum recursion depth exceeded"),
                                               ("-" * 100_000 + "1", "MemoryError")])
def test_a_verifier_past_the_compilers_limits_is_an_error_naming_the_line_not_a_crash(tmp_path, expression, error):
    """Compiling a verifier nested deeper than the compiler can hold raises RecursionError or MemoryError, not
    SyntaxError: the task author wrote it, so it is the pool's error (with file and line), as any other verifier
    that does not compile."""
    deep = copy_task(id="b", verifier=f"def verify(state, answer):\n    return {expression}\n")
    pool = _pool_with(tmp_path, deep.dumps().encode())
    with pytest.raises(PoolError, match=rf"pool.jsonl:2: task 'b': its verifier does not compile: {error}"):
        load_pool(pool)
    assert [t.id for t in load_pool(pool, compiled_only=True)] == ["a", "c"]


def test_json_nested_past_pythons_recursion_limit_is_an_error_naming_the_line(tmp_path):
    """A middle line nested deeper than json can parse raises RecursionError, not ValueError: still the pool's error."""
    pool = _pool_with(tmp_path, b'{"id": "b", "domain": "toy", "world": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(PoolError, match=r"pool.jsonl:2: "):
        load_pool(pool)


@pytest.mark.parametrize("middle, message", [
    (copy_task(id="b", instruction="caf\u00e9").dumps().encode().replace("é".encode(), b"\xe9"), "not valid UTF-8"),
    (copy_task(id="a").dumps().encode(), "task id 'a' is already on line 1"),
    (copy_task(id="b", verifier="def verify(state, answer)\n    return True\n").dumps().encode(), "does not compile"),
])
def test_gym_make_with_a_bad_pool_file_raises_the_same_error(tmp_path, middle, message):
    import gymnasium as gym

    pool = _pool_with(tmp_path, middle)
    with pytest.raises(PoolError, match=rf"pool.jsonl:2: .*{message}"):
        gym.make("Toy-v0", tasks=str(pool))


def test_label_reads_one_stages_proposals_though_an_id_recurs_across_stages(tmp_path):
    """A run's parsed.jsonl holds several stages' proposals, one id sometimes under two labels."""
    path = tmp_path / "parsed.jsonl"
    append_pool(path, [copy_task(id="a", provenance={"label": "pool"}), copy_task(id="a", provenance={"label": "rl"}),
                       copy_task(id="b", provenance={"label": "rl"}), copy_task(id="c")])
    assert [t.id for t in load_pool(path, label="pool")] == ["a"]
    assert [(t.id, t.provenance.get("label")) for t in load_pool(path, label="rl")] == [("a", "rl"), ("b", "rl")]
    assert [t.id for t in load_pool(path, dedupe=True)] == ["a", "b", "c"]


def test_a_missing_file_has_no_records_and_an_empty_append_makes_none(tmp_path):
    path = tmp_path / "runs" / "a" / "metrics.jsonl"
    assert read_jsonl(path) == [] and append_jsonl(path, []) == 0 and not (tmp_path / "runs").exists()
    assert append_jsonl(path, [{"n": 1}]) == 1 and read_jsonl(path) == [{"n": 1}]  # its folders made as needed


@pytest.mark.parametrize("tail", [b"5", b"[1]", b'{"a": 1}\n7', b"\xc3", b'{"a": 1}\n{"b'])
def test_an_append_ends_a_whole_last_line_and_cuts_a_partial_one_however_short(tmp_path, tail):
    path = tmp_path / "log.jsonl"
    path.write_bytes(tail)
    kept = read_jsonl(path)
    append_jsonl(path, [{"new": True}])
    assert read_jsonl(path) == kept + [{"new": True}]
    assert kept == [json.loads(line) for line in tail.split(b"\n") if line in (b"5", b"[1]", b'{"a": 1}', b"7")]


def test_write_atomic_replaces_a_file_whole_in_utf8_leaving_no_temporary_file(tmp_path):
    path = tmp_path / "summary.md"
    path.write_text("old")
    write_atomic(path, "nouveau résumé ✓")
    assert path.read_bytes() == "nouveau résumé ✓".encode() and os.listdir(tmp_path) == ["summary.md"]


def test_a_last_line_that_is_not_utf8_is_the_same_error_to_an_append_as_to_a_read(tmp_path):
    """Not a crash's tail (that is a character cut short): the append leaves the file for the user to mend."""
    path = tmp_path / "log.jsonl"
    data = b'{"a": 1}\n{"b": "\xff"}'
    path.write_bytes(data)
    for use, error in [(read_jsonl, RecordsError), (lambda p: append_jsonl(p, [{"new": True}]), RecordsError),
                       (load_pool, PoolError), (lambda p: append_pool(p, [copy_task(id="z")]), PoolError)]:
        with pytest.raises(error, match=r"log.jsonl:2: not valid UTF-8: byte 0xff at byte 8"):
            use(path)
    assert path.read_bytes() == data


def test_appends_leave_no_file_open_whatever_they_meet(tmp_path):
    path = tmp_path / "log.jsonl"
    before = len(os.listdir("/proc/self/fd"))
    for tail in (b"", b'{"a": 1}', b'{"b', b"\xff"):
        path.write_bytes(tail)
        with contextlib.suppress(RecordsError):
            append_jsonl(path, [{"new": True}])
    assert len(os.listdir("/proc/self/fd")) == before


def test_write_atomic_syncs_the_file_then_the_folder_that_holds_its_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino) or real_fsync(fd))
    write_atomic(tmp_path / "summary.md", "text")
    assert synced == [(tmp_path / "summary.md").stat().st_ino, tmp_path.stat().st_ino]



def test_a_middle_line_cut_inside_a_character_is_an_error_not_a_crash(tmp_path):
    """Only the *last* line can be a crash's tail."""
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"a": 1}\xc3\n{"b": 2}\n')
    with pytest.raises(RecordsError, match=r"log.jsonl:1: not valid UTF-8"):
        read_jsonl(path)


def test_blank_lines_of_spaces_or_carriage_returns_are_skipped(tmp_path):
    """A hand-edited or CRLF file."""
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\r\n   \n{"b": 2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"b": 2}]


@pytest.mark.parametrize("last", [True, False])
def test_json_nested_past_pythons_recursion_limit_is_a_records_error_or_a_skipped_tail(tmp_path, last):
    """A line nested past the parser is a crash's tail where it is last, else an error naming it."""
    path = tmp_path / "log.jsonl"
    deep = b"[" * 100_000 + b"]" * 100_000
    path.write_bytes(b'{"a": 1}\n' + deep + (b"" if last else b'\n{"b": 2}\n'))
    if last:
        assert read_jsonl(path) == [{"a": 1}]
    else:
        with pytest.raises(RecordsError, match=r"log.jsonl:2: not readable JSON"):
            read_jsonl(path)


def test_an_append_cuts_a_partial_last_line_as_long_as_the_block_it_is_read_in(tmp_path):
    """A partial last line of exactly 64 KiB right after a newline is still cut, not glued to."""
    path = tmp_path / "log.jsonl"
    head = b'{"a": 1}\n'
    path.write_bytes(head + b'{"b": "' + b"x" * (65536 - 7))
    assert read_jsonl(path) == [{"a": 1}]
    append_jsonl(path, [{"new": True}])
    assert read_jsonl(path) == [{"a": 1}, {"new": True}]


def test_an_append_interrupted_by_ctrl_c_is_taken_back(tmp_path, monkeypatch):
    """Ctrl-C in the middle of an append takes its lines back, as an error does."""
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"a": 1}])
    before = path.read_bytes()

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        append_jsonl(path, [{"b": 2}])
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_an_append_is_synced_to_disk(tmp_path, monkeypatch):
    """Nothing lost on a crash: the appended lines reach the disk before append returns."""
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino) or real_fsync(fd))
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"a": 1}])
    assert synced == [path.stat().st_ino]


def test_append_passes_its_dumps_options_on(tmp_path):
    """Pools are written with their characters as they are."""
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"text": "résumé", "n": {1, 2}}], ensure_ascii=False, default=sorted)
    assert path.read_bytes() == '{"text": "résumé", "n": [1, 2]}\n'.encode()


def test_write_atomic_interrupted_before_the_rename_leaves_the_old_file_whole(tmp_path, monkeypatch):
    """A write that fails before its rename leaves the old file whole."""
    path = tmp_path / "summary.md"
    path.write_text("old")

    def crash(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        write_atomic(path, "new text, longer")
    monkeypatch.undo()
    assert path.read_text() == "old"
