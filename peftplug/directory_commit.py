"""One commit for the many files of a save: a journal, a directory lock, and recovery.

A save stages its files under temporary names (:mod:`peftplug.files`), then commits them:

1. under an exclusive lock on the directory, it writes the journal ``.peftplug-commit.json``
   (the renames to make and the files to remove) and renames it into place: from here on the
   save has happened, whatever becomes of the process;
2. it makes the renames and removals, then deletes the journal.

A process that dies before step 1 leaves the old adapter and some temporary files; one that dies
during step 2 leaves a journal, and whoever next saves or loads there under peftplug finishes its
work first (:func:`settle`). Readers hold a shared lock while they read, so they see the old
adapter or the new one, never a mix, and two saves into one directory end with one of the two
whole adapters. Locks are ``flock`` locks on the directory itself (no lock file), released by the
kernel when their process dies; where ``flock`` does not exist or the file system refuses it,
saves go on unlocked (each file is still replaced atomically).

A journal is read from disk like any other file: its paths must be relative, stay inside the
directory, and name a temporary file of its own destination, or it is refused naming the field.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from peftplug.errors import AdapterLoadError

JOURNAL_NAME = ".peftplug-commit.json"
TEMPORARY_MARK = "peftplug"


@contextlib.contextmanager
def directory_lock(directory: Path, exclusive: bool) -> Iterator[None]:
    """Hold ``flock`` on ``directory`` (shared or exclusive) for the duration of the block."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError:  # a file system without flock (some network mounts)
            pass
        yield
    finally:
        os.close(fd)


def commit(directory: Path, renames: list[tuple[Path, Path]], removes: Iterable[Path]) -> None:
    """Rename each staged ``(temporary, final)`` pair and remove ``removes``, as one commit.

    The caller holds the exclusive lock. The journal is on disk before the first rename, so a
    process killed half-way leaves a directory that :func:`settle` completes.
    """
    journal = {
        "renames": [[_relative(directory, tmp), _relative(directory, final)] for tmp, final in renames],
        "removes": sorted(_relative(directory, path) for path in removes),
    }
    path = directory / JOURNAL_NAME
    fd, staged = temporary_file(path)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(journal, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staged, path)
    _fsync_directory(directory)
    _apply(directory, journal)


def settle(directory: Path) -> bool:
    """Finish the commit a killed save left in ``directory``, if any; True when there was one.

    The caller holds the exclusive lock. A directory that cannot be written keeps its journal,
    and reading it is an error naming the directory.
    """
    path = directory / JOURNAL_NAME
    if not path.is_file():
        return False
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdapterLoadError(f"{str(path)!r} is not a peftplug commit journal: {error}") from error
    _check_journal(directory, path, journal)
    try:
        _apply(directory, journal)
    except PermissionError as error:
        raise AdapterLoadError(
            f"{str(directory)!r} holds a save that was interrupted before it finished ({JOURNAL_NAME}), and "
            f"the directory cannot be written to finish it: {error}"
        ) from error
    return True


@contextlib.contextmanager
def settled_for_reading(directory: Path) -> Iterator[None]:
    """Hold a shared lock on ``directory`` while the block reads it, after finishing any commit a
    killed save left there (so what is read is one whole adapter)."""
    if not directory.is_dir():
        yield
        return
    if (directory / JOURNAL_NAME).exists():
        with directory_lock(directory, exclusive=True):
            settle(directory)
    with directory_lock(directory, exclusive=False):
        yield


def temporary_file(final: Path) -> tuple[int, Path]:
    """Create the temporary file a save stages ``final`` in, beside it:
    ``.<name>.peftplug.<pid>.<random>.tmp`` (the mark and the pid say whose it is). Returns its
    open descriptor and path."""
    fd, name = tempfile.mkstemp(
        prefix=f".{final.name}.{TEMPORARY_MARK}.{os.getpid()}.", suffix=".tmp", dir=final.parent
    )
    return fd, final.parent / Path(name).name  # mkstemp's path is absolute: keep the folder's form


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files that saves killed before their commit left in ``folder``
    (peftplug's, whose writer process is gone); a live writer's, and other programs' files,
    stay. Returns the paths removed."""
    removed = []
    for path in folder.glob(f".*.{TEMPORARY_MARK}.*.tmp"):
        parts = path.name.rsplit(".", 4)
        if len(parts) != 5 or parts[1] != TEMPORARY_MARK or not parts[2].isdigit():
            continue
        pid = int(parts[2])
        if pid != os.getpid() and not _process_alive(pid):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _apply(directory: Path, journal: dict) -> None:
    """Make the journal's renames and removals (each one idempotent), then delete the journal."""
    folders = {directory}
    for tmp_name, final_name in journal["renames"]:
        tmp, final = directory / tmp_name, directory / final_name
        if tmp.exists():
            os.replace(tmp, final)
        folders.add(final.parent)
    for name in journal["removes"]:
        (directory / name).unlink(missing_ok=True)
    for folder in folders:
        _fsync_directory(folder)
    (directory / JOURNAL_NAME).unlink()
    _fsync_directory(directory)


def _check_journal(directory: Path, path: Path, journal: object) -> None:
    """Refuse a journal that is not the shape :func:`commit` writes or names a path outside
    ``directory`` (a downloaded folder could carry one)."""
    if not isinstance(journal, dict) or set(journal) != {"renames", "removes"}:
        raise AdapterLoadError(f"{str(path)!r} is not a peftplug commit journal: expected the fields renames, removes")
    renames, removes = journal["renames"], journal["removes"]
    if not isinstance(renames, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(n, str) for n in pair) for pair in renames
    ):
        raise AdapterLoadError(f"{str(path)!r}: field 'renames' must be a list of [temporary, final] path pairs")
    if not isinstance(removes, list) or not all(isinstance(n, str) for n in removes):
        raise AdapterLoadError(f"{str(path)!r}: field 'removes' must be a list of paths")
    for tmp_name, final_name in renames:
        for name in (tmp_name, final_name):
            _check_inside(directory, path, "renames", name)
        tmp, final = Path(tmp_name), Path(final_name)
        if tmp.parent != final.parent or not (tmp.name.startswith(f".{final.name}.") and tmp.name.endswith(".tmp")):
            raise AdapterLoadError(
                f"{str(path)!r}: field 'renames' pairs {tmp_name!r} with {final_name!r}, which is not its temporary file"
            )
    for name in removes:
        _check_inside(directory, path, "removes", name)


def _check_inside(directory: Path, journal: Path, field: str, name: str) -> None:
    candidate = Path(name)
    if candidate.is_absolute() or ".." in candidate.parts or not candidate.parts or name == JOURNAL_NAME:
        raise AdapterLoadError(
            f"{str(journal)!r}: field {field!r} names {name!r}, which is not a file inside the folder"
        )
    resolved = (directory / candidate).parent.resolve()
    if not resolved.is_relative_to(directory.resolve()):
        raise AdapterLoadError(f"{str(journal)!r}: field {field!r} names {name!r}, which leads out of the folder")


def _relative(directory: Path, path: Path) -> str:
    return path.relative_to(directory).as_posix()


def _fsync_directory(directory: Path) -> None:
    """Make the renames in ``directory`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
