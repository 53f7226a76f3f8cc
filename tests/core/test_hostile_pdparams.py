"""Hostile ``.pdparams`` files: streams whose shape alone (no global, no code) would hang or
crash a reader. Each is refused with an error naming the file, by every reader that opens one:
``read_pdparams``, ``from_pretrained``'s format detection and read, ``peftplug inspect`` and
``peftplug convert``. The checks run in a child process with a time limit, so a reader that
hangs fails the test instead of hanging the suite."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from peftplug.errors import AdapterLoadError
from peftplug.pdparams import pdparams_bytes, read_pdparams


def shared_tuple_key(depth: int) -> bytes:
    """``{t: 1}`` where ``t`` is a tuple ``depth`` levels deep, each level the previous one twice
    through the memo: 10 bytes a level, and 2**depth steps to hash."""
    stream = b"\x80\x04}\x94)\x94"
    for level in range(1, depth + 1):
        stream += b"0h" + bytes([level]) + b"h" + bytes([level]) + b"\x86\x94"  # POP, GET, GET, TUPLE2, MEMOIZE
    return stream + b"K\x01s."


def deep_key(depth: int) -> bytes:
    """``{(((...),),): array}``: a key nested ``depth`` levels (a bare RecursionError once)."""
    return b"\x80\x04}" + b"(" * depth + b"t" * depth + b"K\x01s."


HOSTILE = {
    "memo-shared tuple key, depth 40": (shared_tuple_key(40), "nested more than 32 levels"),
    "tuple key, depth 100000": (deep_key(100_000), "nested more than 32 levels"),
    "list nested 100000 deep": (b"\x80\x04" + b"]" * 100_000 + b"a" * 99_999 + b".", "nested more than 32 levels"),
    "integer key": (b"\x80\x04}K\x01K\x02s.", "dict key at byte 7 is not a string"),
    "shallow tuple key": (shared_tuple_key(3), "dict key at byte"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_shape_is_refused_naming_the_file(tmp_path, case):
    stream, reason = HOSTILE[case]
    assert len(stream) < 210_000
    path = tmp_path / "lora_model_state.pdparams"
    path.write_bytes(stream)
    (tmp_path / "lora_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4, "target_modules": [".*q_proj"]}))
    child = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from peftplug.adapter_io import read_adapter
        from peftplug.app.cli import main
        from peftplug.errors import AdapterLoadError
        from peftplug.pdparams import read_pdparams
        directory = Path({str(tmp_path)!r})
        for read in (lambda: read_pdparams(directory / "lora_model_state.pdparams"), lambda: read_adapter(directory)):
            try:
                read()
            except AdapterLoadError as error:
                print("refused:", error)
            else:
                print("read it")
        print("inspect exit", main(["inspect", str(directory)]))
        print("convert exit", main(["convert", str(directory), str(directory.parent / "out"), "--to", "peft"]))
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr[-2000:]
    assert lines[:2] == [f"refused: {path}: {lines[0].split(': ', 2)[2]}"] * 2, lines
    assert reason in lines[0], lines[0]
    assert lines[2:] == ["inspect exit 1", "convert exit 1"], lines
    assert str(path) in done.stderr and "RecursionError" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_ordinary_state_dicts_pass_the_shape_check(tmp_path):
    """paddle.save's shapes: a name table, big arrays split with their UnpackBigParamInfor@@ entry."""
    tensors = {f"llama.layers.{i}.q_proj.lora_A": np.full((4, 2), i, "float32") for i in range(3)}
    path = tmp_path / "a.pdparams"
    path.write_bytes(pdparams_bytes(tensors))
    assert sorted(read_pdparams(path)) == sorted(tensors)
    import pickle

    split = {
        "w@@.0": np.zeros(3, "float32"),
        "w@@.1": np.ones(3, "float32"),
        "UnpackBigParamInfor@@": {"w": {"OriginShape": [2, 3], "slices": ["w@@.0", "w@@.1"]}},
    }
    path.write_bytes(pickle.dumps(split, protocol=2))
    assert read_pdparams(path)["w"].shape == (2, 3)


def test_the_refusal_is_an_adapter_load_error():
    from peftplug.pickle_scan import UnsafePickleShape

    assert issubclass(UnsafePickleShape, AdapterLoadError)
