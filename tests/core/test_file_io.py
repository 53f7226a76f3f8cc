"""Streaming writers and zero-copy readers give the files the reference libraries give.

The safetensors writer must produce the bytes of ``safetensors.numpy.save`` (so any reader takes
them), the pdparams writer those of ``pickle.dump`` as ``paddle.save`` uses it, and a content
that fails half-way through streaming must leave the directory as it was.
"""

import io
import pickle
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save

from peftplug.files import content_bytes, write_files_atomically
from peftplug.pdparams import pdparams_writer, read_pdparams
from peftplug.plugins.formats.safetensors_io import read_safetensors, safetensors_writer

DTYPES = [
    "bool",
    "uint8",
    "int8",
    "int16",
    "uint16",
    "float16",
    "int32",
    "uint32",
    "float32",
    "float64",
    "int64",
    "uint64",
]


def random_tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    tensors = {}
    for index in range(int(rng.integers(1, 7))):
        shape = tuple(int(n) for n in rng.integers(0, 4, size=int(rng.integers(0, 3))))
        value = np.asarray(rng.standard_normal(shape) * 10).astype(DTYPES[int(rng.integers(len(DTYPES)))])
        tensors[f"t{index}.{rng.integers(9)}"] = value.T if value.ndim == 2 and index % 2 else value
    return tensors


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}])
def test_safetensors_writer_gives_the_bytes_of_safetensors_save(metadata):
    rng = np.random.default_rng(0)
    for _ in range(100):
        tensors = random_tensors(rng)
        streamed = content_bytes(safetensors_writer(tensors, metadata))
        reference = save({k: v if v.flags.c_contiguous else v.copy() for k, v in tensors.items()}, metadata=metadata)
        assert streamed == reference, sorted(tensors)


def test_read_safetensors_reads_what_safetensors_wrote_as_writable_arrays(tmp_path):
    tensors = {"a": np.arange(12, dtype="float32").reshape(3, 4), "b": np.arange(5, dtype="int64")}
    (tmp_path / "x.safetensors").write_bytes(save(tensors))
    loaded = read_safetensors(tmp_path / "x.safetensors")
    assert set(loaded) == {"a", "b"}
    for key, value in tensors.items():
        np.testing.assert_array_equal(loaded[key], value)
        assert loaded[key].flags.writeable
    loaded["a"][0, 0] = 7  # views of one buffer of this reader's own, not of the file
    assert load_file(str(tmp_path / "x.safetensors"))["a"][0, 0] == 0


def test_pdparams_writer_streams_what_pickle_dump_writes_and_read_pdparams_reads_it(tmp_path):
    tensors = {
        "w": np.arange(6, dtype="float32").reshape(2, 3).T,
        "b": np.ones(2, "float16"),
        "big": np.arange(300 * 70, dtype="float32").reshape(300, 70).T,  # data past one pickle frame
        "big_f16": np.arange(40_000, dtype="float16"),
        "flag": np.asarray(True),  # one-byte data: numpy and pickle share and memoize that bytes object
        "flag_again": np.asarray(True),
        "empty": np.zeros((0, 3), "int64"),
    }
    streamed = content_bytes(pdparams_writer(tensors))
    reference = io.BytesIO()
    expected = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    pickle.dump({**expected, "StructuredToParameterName@@": {k: k for k in tensors}}, reference, protocol=4)
    assert streamed == reference.getvalue()
    (tmp_path / "m.pdparams").write_bytes(streamed)
    loaded = read_pdparams(tmp_path / "m.pdparams")
    assert sorted(loaded) == sorted(tensors)
    for key, value in expected.items():
        np.testing.assert_array_equal(loaded[key], value)
        assert loaded[key].dtype == value.dtype


DILL_FIRST_SCRIPT = """
import io, pickle
import dill  # patches pickle's pure-Python pickler before the writer is imported
import numpy as np
from peftplug.pdparams import pdparams_bytes

tensors = {"w": np.arange(6, dtype="float32").reshape(2, 3).T, "flag": np.asarray(True)}
reference = io.BytesIO()
plain = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
pickle.dump({**plain, "StructuredToParameterName@@": {k: k for k in tensors}}, reference, protocol=4)
assert pdparams_bytes(tensors) == reference.getvalue(), pdparams_bytes(tensors)
"""


def test_pdparams_writer_ignores_what_dill_patched_into_pickle():
    """dill (imported by paddlenlp through datasets) puts its savers in pickle's pure-Python
    pickler; imported before the writer, they must not reach the stream (they wrote
    ``dill._dill._get_attr``, which no plain reader accepts)."""
    pytest.importorskip("dill")
    subprocess.run([sys.executable, "-c", DILL_FIRST_SCRIPT], check=True, timeout=120)


def test_a_stream_that_fails_half_way_leaves_the_directory_as_it_was(tmp_path):
    (tmp_path / "adapter.bin").write_bytes(b"old")

    def fails_after_some_bytes(handle):
        handle.write(b"x" * 1000)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_files_atomically(tmp_path, {"config.json": b"{}", "adapter.bin": fails_after_some_bytes})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter.bin"]
    assert (tmp_path / "adapter.bin").read_bytes() == b"old"


def test_streamed_content_larger_than_a_writeback_chunk_arrives_whole(tmp_path, monkeypatch):
    import peftplug.files as files

    monkeypatch.setattr(files, "WRITEBACK_CHUNK", 4096)
    payload = np.random.default_rng(1).integers(0, 255, size=50_000, dtype=np.uint8)
    chunks = [payload[i : i + 3000] for i in range(0, payload.size, 3000)]

    def stream(handle):
        for chunk in chunks:
            handle.write(memoryview(chunk))

    write_files_atomically(tmp_path, {"data.bin": stream})
    assert (tmp_path / "data.bin").read_bytes() == payload.tobytes()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_get_the_mode_open_would_give_them(tmp_path, umask):
    """Adapter files follow the umask as ``open()``'s do, not ``mkstemp``'s 0600; a file that is
    replaced keeps its own mode."""
    import os
    import stat

    (tmp_path / "kept.json").write_bytes(b"{}")
    os.chmod(tmp_path / "kept.json", 0o640)
    previous = os.umask(umask)
    try:
        write_files_atomically(tmp_path, {"new.json": b"{}", "sub/new.bin": b"x", "kept.json": b"[]"})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "sub" / "new.bin").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "kept.json").stat().st_mode) == 0o640


SAVED_OVER = {
    "peft-then-paddlenlp": ({}, {"format": "paddlenlp"}, ["lora_config.json", "lora_model_state.pdparams"]),
    "paddlenlp-then-peft": ({"format": "paddlenlp"}, {}, ["adapter_config.json", "adapter_model.safetensors"]),
    "safetensors-then-bin": ({}, {"safe_serialization": False}, ["adapter_config.json", "adapter_model.bin"]),
}


@pytest.mark.parametrize("case", sorted(SAVED_OVER))
def test_a_save_leaves_one_adapter_in_the_directory(torch, make_model, tmp_path, case):
    """Saving over an adapter of another format (or HF PEFT's other weights file) removes the
    old adapter's files once the new ones are in place, so the next load reads the new adapter;
    files that are no adapter's (a Trainer's, the model card) stay."""
    import peftplug

    first, second, adapter_files = SAVED_OVER[case]

    def adapted(seed):
        model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(target_modules=["q_proj"]))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator))
        return model

    (tmp_path / "optimizer.pt").write_bytes(b"the trainer's")
    adapted(1).save_pretrained(tmp_path, **first)
    newer = adapted(2)
    newer.save_pretrained(tmp_path, **second)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["README.md", "optimizer.pt", *adapter_files])
    loaded = peftplug.PeftModel.from_pretrained(make_model("llama"), tmp_path)
    ids = torch.arange(3, 10).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, newer(input_ids=ids).logits, rtol=0, atol=1e-6)


def test_the_next_save_removes_temporaries_a_killed_save_left(tmp_path):
    """A save killed before its commit leaves ``.<name>.peftplug.<pid>.<random>.tmp`` files; the
    next save into the folder removes those whose writer is gone, whatever file they were for; a
    live writer's, and files of the same shape that are not peftplug's, stay."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed = tmp_path / f".adapter_model.safetensors.peftplug.{dead_pid}.x1y2z3.tmp"
        killed_other_format = tmp_path / f".lora_model_state.pdparams.peftplug.{dead_pid}.k9.tmp"
        running = tmp_path / f".adapter_model.safetensors.peftplug.{live.pid}.a1b2c3.tmp"
        other = tmp_path / f".unrelated.{dead_pid}.q.tmp"
        for path in (killed, killed_other_format, running, other):
            path.write_bytes(b"half a tensor")
        write_files_atomically(tmp_path, {"adapter_model.safetensors": b"new"})
        assert not killed.exists() and not killed_other_format.exists()
        assert running.exists() and other.exists()
        assert (tmp_path / "adapter_model.safetensors").read_bytes() == b"new"
        assert not [p for p in tmp_path.glob(".adapter_model.safetensors.*.tmp") if p != running]
    finally:
        live.kill()
        live.wait()


def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    """ENOSPC names no file by itself: the error names the one being written, and the save
    leaves the directory as it was."""
    import errno

    import peftplug.files

    (tmp_path / "adapter_config.json").write_bytes(b"old")

    def full(handle, content):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(peftplug.files, "_write_content", full)
    with pytest.raises(OSError, match=r"No space left on device \(writing .*adapter_model\.safetensors\)") as error:
        write_files_atomically(tmp_path, {"adapter_model.safetensors": b"new", "adapter_config.json": b"new"})
    assert error.value.errno == errno.ENOSPC and error.value.filename.endswith("adapter_model.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json"]
    assert (tmp_path / "adapter_config.json").read_bytes() == b"old"


def test_a_save_into_a_relative_folder_commits(tmp_path, monkeypatch):
    """``peftplug train`` saves into ``./peftplug-out``: the commit journal names each file
    relative to a folder given relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    from pathlib import Path

    write_files_atomically(Path("out"), {"adapter_config.json": b"{}", "named/adapter_config.json": b"[]"})
    assert (tmp_path / "out" / "adapter_config.json").read_bytes() == b"{}"
    assert (tmp_path / "out" / "named" / "adapter_config.json").read_bytes() == b"[]"
    assert sorted(p.name for p in (tmp_path / "out").rglob(".*")) == []
