"""Writing adapter files so that an interrupted save never leaves a half-written adapter."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def write_files_atomically(
    directory: Path, files: dict[str, bytes], before_commit: Callable[[], None] | None = None
) -> list[Path]:
    """Write ``{relative name: content}`` into ``directory``, all or nothing.

    Every file is first written and flushed to a temporary name beside its destination; only
    when all are on disk are they renamed into place (``os.replace``, atomic per file). A crash
    or an exception while writing leaves the files already in ``directory`` as they were, and
    no temporary file behind. Other files in ``directory`` (a Trainer checkpoint's, say) are
    not touched. ``before_commit``, when given, runs once everything is staged and before the
    first rename (a tensor-parallel save waits there for every rank); if it raises, nothing is
    renamed. Returns the final paths.
    """
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, content in files.items():
            final = directory / name
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
            staged.append((Path(tmp_name), final))
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        if before_commit is not None:
            before_commit()
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    return [final for _, final in staged]
