"""The merged saves that must fail, run by both tensor-parallel workers (framework-free).

Cases, in order: ``rank1_raises`` (rank 1 raises while it collects its pieces),
``rank0_write_fails`` (rank 0 fails to write the merged adapter), ``all_fine`` (nothing
injected), ``rank1_absent`` (rank 1 never arrives: it sleeps past ``PEFTPLUG_TP_TIMEOUT``). Each
case records ``error`` (``"Type: message"``, None when the save worked), ``type`` (the error's
class name), ``seconds`` and ``contents`` (the directory's files afterwards, None when it does
not exist).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import peftplug


def try_failing_saves(model, layer, rank: int, directory: Path) -> dict:
    """Run the cases with ``model.save_pretrained`` into ``directory/<case>``; ``layer`` is an
    adapter layer of ``model`` whose shard export rank 1 breaks. Returns this rank's records."""
    seen = {}

    def attempt(case: str) -> None:
        target = directory / case
        start = time.monotonic()
        try:
            model.save_pretrained(target)
            seen[case] = {"error": None, "type": None}
        except Exception as error:  # the test checks type and message
            seen[case] = {"error": f"{type(error).__name__}: {error}", "type": type(error).__name__}
        seen[case]["seconds"] = time.monotonic() - start
        seen[case]["contents"] = sorted(p.name for p in target.iterdir()) if target.is_dir() else None

    if rank == 1:

        def broken(name):
            raise RuntimeError("injected failure on rank 1")

        layer.export_adapter_shard = broken
    attempt("rank1_raises")
    if rank == 1:
        del layer.export_adapter_shard
    fmt = peftplug.manager.get_plugin_manager().formats.get("peft")
    original_write = type(fmt).write
    if rank == 0:

        def broken_write(self, state, *, safe_serialization=True):
            raise OSError("injected write failure on rank 0")

        type(fmt).write = broken_write
    try:
        attempt("rank0_write_fails")
    finally:
        type(fmt).write = original_write
    attempt("all_fine")
    if rank == 1:
        time.sleep(float(os.environ["PEFTPLUG_TP_TIMEOUT"]) + 3)
    else:
        attempt("rank1_absent")
    return seen


def error_of(action) -> str | None:
    """``"Type: message"`` of what ``action`` raises, None when it returns."""
    try:
        action()
    except Exception as error:  # the test checks type and message
        return f"{type(error).__name__}: {error}"
    return None
