"""Reading and writing adapters through the registered formats."""

from __future__ import annotations

from pathlib import Path

from peftplug.directory_commit import settled_for_reading
from peftplug.errors import AdapterLoadError
from peftplug.files import FileContent, write_files_atomically
from peftplug.manager import PluginManager, get_plugin_manager
from peftplug.registration import Format
from peftplug.state import AdapterState


def detect_format(directory: Path, manager: PluginManager | None = None) -> Format:
    """The registered format whose files are in ``directory``; a clear error when none is."""
    manager = manager or get_plugin_manager()
    if directory.exists() and not directory.is_dir():
        raise AdapterLoadError(
            f"adapter path {str(directory)!r} is a file, not a directory: pass the folder that holds the adapter's "
            f"files ({str(directory.parent)!r}?)"
        )
    if not directory.is_dir():
        raise AdapterLoadError(f"adapter directory {str(directory)!r} does not exist")
    for fmt in manager.formats:
        if fmt.detect(directory):
            return fmt
    present = ", ".join(sorted(p.name for p in directory.iterdir())) or "no files"
    raise AdapterLoadError(
        f"no registered format recognises the files in {str(directory)!r} ({present}); "
        f"known formats: {', '.join(manager.formats.names())}"
    )


def read_adapter(
    directory: str | Path, format: str | None = None, manager: PluginManager | None = None
) -> AdapterState:
    """Read the adapter in ``directory`` (format detected from its files unless named)."""
    manager = manager or get_plugin_manager()
    directory = Path(directory)
    with settled_for_reading(directory):
        fmt = manager.formats.get(format) if format else detect_format(directory, manager)
        state = fmt.read(directory)
    manager.hook.peftplug_after_load(state=state, format=fmt.name)
    return state


def adapter_files(
    state: AdapterState, format: str = "peft", *, safe_serialization: bool = True, manager: PluginManager | None = None
) -> dict[str, FileContent]:
    """The files of ``state`` in ``format`` (``{name: content}``), after the before-save hooks."""
    manager = manager or get_plugin_manager()
    fmt = manager.formats.get(format)
    manager.hook.peftplug_before_save(state=state, format=fmt.name)
    return fmt.write(state, safe_serialization=safe_serialization)


def write_adapter(
    state: AdapterState,
    directory: str | Path,
    format: str = "peft",
    *,
    safe_serialization: bool = True,
    manager: PluginManager | None = None,
) -> list[Path]:
    """Write ``state`` into ``directory`` in ``format``, atomically; returns the files written."""
    manager = manager or get_plugin_manager()
    files = adapter_files(state, format, safe_serialization=safe_serialization, manager=manager)
    directory = Path(directory)
    return write_files_atomically(directory, files, replaces=lambda: replaced_adapter_files(directory, manager))


def replaced_adapter_files(directory: Path, manager: PluginManager | None = None) -> list[Path]:
    """The adapter files, of every registered format, that ``directory`` holds now: what a save
    there supersedes (files it rewrites are kept, as new; others are removed after it)."""
    manager = manager or get_plugin_manager()
    if not directory.is_dir():
        return []
    return sorted({path for fmt in manager.formats for path in fmt.files(directory)})
