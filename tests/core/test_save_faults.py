"""A save killed at any moment, or racing another save, leaves one whole adapter.

The saving process is a child that imports no framework (``tests/support/adapter_saves.py``); it
is killed with SIGKILL, at each file-system call of its commit in turn and at random moments, and
the directory must then read as exactly the old adapter or the new one, byte for byte, with no
temporary file left after the next save.
"""

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from peftplug.adapter_io import read_adapter, write_adapter
from peftplug.directory_commit import JOURNAL_NAME

SUPPORT = Path(__file__).resolve().parents[1] / "support"
sys.path.insert(0, str(SUPPORT))

from adapter_saves import seeded_state, visible_files  # noqa: E402

CHILD = [sys.executable, str(SUPPORT / "adapter_saves.py")]


def saved_files(tmp_path: Path, name: str, seed: int, format: str, size: int = 64) -> dict[str, bytes]:
    directory = tmp_path / name
    write_adapter(seeded_state(seed, size), directory, format)
    return visible_files(directory)


def write_adapter_failing_before_commit(directory: Path) -> None:
    """Stage a save into ``directory`` and fail before its commit: what it cleans up on the way
    must not be what a killed save's journal still needs."""
    from peftplug.files import write_files_atomically

    def interrupted():
        raise RuntimeError("interrupted")

    write_files_atomically(directory, {"adapter_config.json": b"{}"}, before_commit=interrupted)


def hidden_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".*"))


def assert_old_or_new(directory: Path, old: dict, new: dict) -> str:
    read_adapter(directory)  # finishes a commit the killed save left
    seen = visible_files(directory)
    assert seen in (old, new), f"a mix: {sorted(seen)} is neither {sorted(old)} nor {sorted(new)}"
    return "old" if seen == old else "new"


def restore(directory: Path, files: dict[str, bytes]) -> None:
    if directory.exists():
        for path in sorted(directory.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
    directory.mkdir(exist_ok=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)


@pytest.mark.parametrize("old_format, new_format", [("peft", "peft"), ("peft", "paddlenlp")])
def test_a_save_killed_before_each_of_its_file_system_calls_leaves_the_old_or_the_new_adapter(
    tmp_path, old_format, new_format
):
    old = saved_files(tmp_path, "old", 1, old_format)
    new = saved_files(tmp_path, "new", 2, new_format)
    target = tmp_path / "adapter"
    restore(target, old)
    counted = subprocess.run([*CHILD, str(target), "2", new_format, "--kill-at", "0"], capture_output=True, text=True)
    assert counted.returncode == 0, counted.stderr
    calls = int(counted.stdout.split()[-1])

    outcomes = []
    for kill_at in range(1, calls + 1):
        restore(target, old)
        killed = subprocess.run([*CHILD, str(target), "2", new_format, "--kill-at", str(kill_at)], capture_output=True)
        assert killed.returncode == -9, killed.stderr
        with pytest.raises(RuntimeError, match="interrupted"):  # a save that fails before its commit
            write_adapter_failing_before_commit(target)
        outcomes.append(assert_old_or_new(target, old, new))
        write_adapter(seeded_state(3), target, old_format)  # the next save
        assert hidden_files(target) == [], f"left after the save that followed a kill at call {kill_at}"
    assert "old" in outcomes and "new" in outcomes, outcomes


def test_a_save_killed_at_random_moments_leaves_the_old_or_the_new_adapter(tmp_path):
    old = saved_files(tmp_path, "old", 1, "peft")
    new_format = "paddlenlp"
    new = saved_files(tmp_path, "new", 2, new_format, size=16384)  # 4 MiB: kills land mid-save
    target = tmp_path / "adapter"
    rng = random.Random(0)
    outcomes = []
    for _ in range(12):
        restore(target, old)
        child = subprocess.Popen(
            [*CHILD, str(target), "2", new_format, "--size", "16384"], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 0.04))
        child.kill()
        child.wait()
        outcomes.append(assert_old_or_new(target, old, new))
        write_adapter(seeded_state(1), target, "peft")
        assert hidden_files(target) == []
    print({outcome: outcomes.count(outcome) for outcome in ("old", "new")})


def test_two_saves_racing_into_one_directory_end_with_one_whole_adapter_and_readers_see_no_mix(tmp_path):
    first, second = seeded_state(1), seeded_state(2)
    expected = {
        state.config.lora_alpha: {key: np.asarray(value) for key, value in state.tensors.items()}
        for state in (first, second)
    }
    files = {seed: saved_files(tmp_path, f"alone{seed}", seed, "peft") for seed in (1, 2)}
    target = tmp_path / "adapter"
    write_adapter(first, target, "peft")
    writers = [
        subprocess.Popen([*CHILD, str(target), str(seed), "peft", "--repeat", "40"], stdout=subprocess.PIPE)
        for seed in (1, 2)
    ]
    reads, mixes = 0, []

    def read_while_writing() -> None:
        nonlocal reads
        while any(writer.poll() is None for writer in writers):
            state = read_adapter(target)
            reads += 1
            tensors = expected[state.config.lora_alpha]
            if any(not np.array_equal(state.tensors[key], value) for key, value in tensors.items()):
                mixes.append(state.config.lora_alpha)

    reader = threading.Thread(target=read_while_writing)
    reader.start()
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    reader.join()
    assert not mixes, f"{len(mixes)} of {reads} reads gave one adapter's config with another's weights"
    assert visible_files(target) in (files[1], files[2])
    assert not (target / JOURNAL_NAME).exists()


@pytest.mark.parametrize(
    "journal, said",
    [
        ({"renames": [], "removes": ["../victim.txt"]}, "'removes' names '../victim.txt'"),
        ({"renames": [], "removes": ["/etc/hostname"]}, "'removes' names '/etc/hostname'"),
        ({"renames": [["../victim.txt", "adapter_config.json"]], "removes": []}, "'renames' names '../victim.txt'"),
        ({"renames": [["README.md", "adapter_config.json"]], "removes": []}, "which is not its temporary file"),
        ({"renames": "all", "removes": []}, "field 'renames' must be a list"),
        ([1, 2], "expected the fields renames, removes"),
    ],
)
def test_a_commit_journal_that_leads_out_of_the_folder_is_refused_and_changes_nothing(tmp_path, journal, said):
    import json

    from peftplug.errors import AdapterLoadError

    target = tmp_path / "downloaded"
    write_adapter(seeded_state(1), target, "peft")
    (tmp_path / "victim.txt").write_text("keep me")
    (target / "README.md").write_text("card")
    (target / JOURNAL_NAME).write_text(json.dumps(journal))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(AdapterLoadError, match="peftplug-commit.json") as raised:
        read_adapter(target)
    assert said in str(raised.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
