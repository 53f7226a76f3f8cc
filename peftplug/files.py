"""Writing adapter files so that an interrupted save never leaves a half-written adapter."""

from __future__ import annotations

import ctypes
import functools
import io
import os
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from peftplug.directory_commit import (
    JOURNAL_NAME,
    commit,
    directory_lock,
    remove_stale_temporaries,
    settle,
    temporary_file,
)

#: What a format gives for one file: its bytes, or a function that writes them to a binary
#: file (large tensors stream to disk that way, without a second copy in memory).
FileContent = bytes | Callable[[BinaryIO], None]

WRITEBACK_CHUNK = 32 << 20


def content_bytes(content: FileContent) -> bytes:
    """The bytes of one file's content, whichever way it is given."""
    if isinstance(content, (bytes, bytearray, memoryview)):
        return bytes(content)
    buffer = io.BytesIO()
    content(buffer)
    return buffer.getvalue()


def write_files_atomically(
    directory: Path,
    files: dict[str, FileContent],
    before_commit: Callable[[], None] | None = None,
    replaces: Iterable[Path] | Callable[[], Iterable[Path]] = (),
) -> list[Path]:
    """Write ``{relative name: content}`` into ``directory``, all or nothing.

    Every file is first written and fsynced under a temporary name beside its destination
    (``.<name>.peftplug.<pid>.<random>.tmp``); only when all are on disk are they renamed into place, as
    one commit (:mod:`peftplug.directory_commit`): whenever the process dies, ``directory`` holds
    the old files or the new ones, never a mix, once peftplug next reads or saves there. A crash
    or an exception while writing leaves the files already in ``directory`` as they were and no
    temporary file behind; a process killed while writing leaves its temporary files, which the
    next save into the same folder removes (:func:`remove_stale_temporaries`). Other files in
    ``directory`` (a Trainer checkpoint's, say) are not touched. ``before_commit``, when given,
    runs once everything is staged and before the commit (a tensor-parallel save waits there for
    every rank); if it raises, nothing is renamed. A new file gets the mode ``open()`` would give
    it (0666 less the umask), a replaced file keeps its own. ``replaces``: files the new ones
    supersede (an older adapter's, in another format), removed in the same commit; given as a
    function, it is asked under the commit's lock, so a concurrent save's files are seen.
    Returns the final paths.
    """
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, content in files.items():
            final = directory / name
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = temporary_file(final)
            staged.append((tmp, final))
            os.chmod(tmp, _mode_for(final))
            try:
                with os.fdopen(fd, "wb") as handle:
                    _write_content(handle, content)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as error:  # ENOSPC and its kin name no file by themselves
                if error.filename is not None:
                    raise
                raise OSError(error.errno, f"{error.strerror} (writing {final})", str(final)) from error
        if before_commit is not None:
            before_commit()
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    written = [final for _, final in staged]
    try:
        with directory_lock(directory, exclusive=True):
            settle(directory)  # a killed save's journal first: it needs its temporaries
            for folder in {directory, *(final.parent for final in written)}:
                remove_stale_temporaries(folder)
            superseded = replaces() if callable(replaces) else replaces
            commit(directory, staged, set(superseded) - set(written))
    except BaseException:
        if not (directory / JOURNAL_NAME).exists():
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
        raise
    return written


def _mode_for(final: Path) -> int:
    """The permission bits ``open(final, "wb")`` would leave: the file's own when it exists,
    else 0666 less the umask (``mkstemp`` makes its files 0600)."""
    try:
        return stat.S_IMODE(final.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask; read from /proc where it can be, since setting it to read it back
    is seen by every thread at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_content(handle: BinaryIO, content: FileContent) -> None:
    if isinstance(content, (bytes, bytearray, memoryview)):
        handle.write(content)
    else:
        content(_WritebackFile(handle))


class _WritebackFile:
    """A write-only file that starts the disk writeback of each chunk as soon as it is written
    (Linux ``sync_file_range``), so the fsync that ends a save waits for the last chunk only
    instead of the whole file. Elsewhere it is the plain file."""

    def __init__(self, handle: BinaryIO):
        self._handle = handle
        self._fd = handle.fileno()
        self._written = 0
        self._kicked = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write ``data``; every :data:`WRITEBACK_CHUNK` bytes, hand what was written to the disk."""
        count = self._handle.write(data)
        self._written += count
        if self._written - self._kicked >= WRITEBACK_CHUNK:
            sync_file_range = _sync_file_range()
            if sync_file_range is not None:
                self._handle.flush()
                sync_file_range(self._fd, self._kicked, self._written - self._kicked, _SYNC_FILE_RANGE_WRITE)
            self._kicked = self._written
        return count


_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range  # libc's, through the process's symbols
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function
