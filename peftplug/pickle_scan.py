"""A pickle's shape checked before anything in it is built: dict keys, nesting, object count.

An unpickler that resolves only safe globals still builds whatever containers the stream
describes, and Python then hashes every dict key. A 170-byte stream whose key is a tuple nested
40 deep, each level the previous one twice through the memo, makes that hash take 2**40 steps;
a key nested 100,000 deep ends in a bare ``RecursionError``. :func:`check_pickle_shape` walks the
opcodes (payloads are skipped, not read), keeping each stack item's nesting depth and whether it
is a string, and refuses, naming the file and the byte offset:

- a dict key that is not a string (a state dict maps parameter names to arrays);
- nesting deeper than :data:`MAX_DEPTH` (an array is about 5 levels, a state dict one more);
- more than :data:`MAX_OBJECTS` objects (a 7B model's state dict is a few thousand).

A stream that is not a well-formed pickle is left to the unpickler, which names what is wrong.
"""

from __future__ import annotations

import pickletools
import struct
from pathlib import Path
from typing import BinaryIO, NamedTuple

from peftplug.errors import AdapterLoadError

MAX_DEPTH = 32
MAX_OBJECTS = 5_000_000

_OPCODES = {op.code.encode("latin1"): op for op in pickletools.opcodes}
# Payload lengths: the size of the length prefix of each variable-length argument kind.
_LENGTH_PREFIX = {
    pickletools.TAKEN_FROM_ARGUMENT1: ("<B", 1),
    pickletools.TAKEN_FROM_ARGUMENT4: ("<i", 4),
    pickletools.TAKEN_FROM_ARGUMENT4U: ("<I", 4),
    pickletools.TAKEN_FROM_ARGUMENT8U: ("<Q", 8),
}
# Opcodes that leave a string (``encoding="latin1"`` reads Python 2 strings as str too).
_STRINGS = {"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING", "SHORT_BINSTRING"}
# Opcodes that add items to the container below them, which stays where it is.
_FILLS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}


class UnsafePickleShape(AdapterLoadError):
    """A pickle describes objects a state dict never holds (see the module docstring)."""


class _Item(NamedTuple):
    depth: int
    is_str: bool = False


_MARK = _Item(-1)


def check_pickle_shape(handle: BinaryIO, path: Path) -> None:
    """Walk the pickle in ``handle`` from its current position (which is restored) and raise
    :class:`UnsafePickleShape` when its shape is not a state dict's (see the module docstring)."""
    start = handle.tell()
    try:
        _walk(handle, path)
    finally:
        handle.seek(start)


def _walk(handle: BinaryIO, path: Path) -> None:
    stack: list[_Item] = []
    memo: dict[int, _Item] = {}
    objects = 0
    while True:
        offset = handle.tell()
        code = handle.read(1)
        op = _OPCODES.get(code)
        if op is None:
            return  # not a pickle opcode (or the end): the unpickler reports it
        argument = _argument(handle, op)
        if argument is _TRUNCATED:
            return
        name = op.name
        if name == "STOP":
            return
        if name in _MEMO_PUT or name == "MEMOIZE":
            if not stack:
                return
            memo[len(memo) if name == "MEMOIZE" else int(argument)] = stack[-1]
            continue
        if name in _MEMO_GET:
            if int(argument) not in memo:
                return
            stack.append(memo[int(argument)])
            continue
        if name == "MARK":
            stack.append(_MARK)
            continue
        popped = _pop(stack, op)
        if popped is None:
            return
        if name in ("SETITEM", "SETITEMS", "DICT"):
            pairs = popped[1:] if name != "DICT" else popped
            keys = pairs[0::2]
            if any(not key.is_str for key in keys):
                raise UnsafePickleShape(
                    f"{path}: a dict key at byte {offset} is not a string; a state dict maps parameter names "
                    "to tensors, and nothing else is read"
                )
        if name in _FILLS:
            container, items = popped[0], popped[1:]
            depth = max([container.depth] + [item.depth + 1 for item in items])
            pushed = [_Item(depth)]
        elif not op.stack_after:
            pushed = []
        elif name == "DUP":
            pushed = [popped[0], popped[0]]
        else:
            depth = 1 + max((item.depth for item in popped), default=-1)
            pushed = [_Item(depth, name in _STRINGS)] * len(op.stack_after)
        for item in pushed:
            if item.depth > MAX_DEPTH:
                raise UnsafePickleShape(
                    f"{path}: objects nested more than {MAX_DEPTH} levels deep (at byte {offset}); a state dict "
                    "of arrays is a few levels deep, and nothing deeper is read"
                )
        objects += len(pushed)
        if objects > MAX_OBJECTS:
            raise UnsafePickleShape(f"{path}: more than {MAX_OBJECTS:,} objects; a state dict holds far fewer")
        stack.extend(pushed)


_TRUNCATED = object()


def _argument(handle: BinaryIO, op: pickletools.OpcodeInfo) -> object:
    """The opcode's argument when it is small (memo indices); variable-length payloads skipped."""
    if op.arg is None:
        return None
    prefix = _LENGTH_PREFIX.get(op.arg.n)
    if prefix is None:
        try:
            return op.arg.reader(handle)
        except ValueError:
            return _TRUNCATED
    form, size = prefix
    raw = handle.read(size)
    if len(raw) < size:
        return _TRUNCATED
    (length,) = struct.unpack(form, raw)
    if length < 0:
        return _TRUNCATED
    handle.seek(length, 1)
    return None


def _pop(stack: list[_Item], op: pickletools.OpcodeInfo) -> list[_Item] | None:
    """The items ``op`` takes off ``stack``, bottom first; None when the stack has too few."""
    before = op.stack_before
    if pickletools.markobject in before:
        # The items below the mark that the opcode also takes (SETITEMS' dict), then all above it.
        below = before.index(pickletools.markobject)
        marks = [i for i, item in enumerate(stack) if item is _MARK]
        if not marks or marks[-1] < below:
            return None
        mark = marks[-1]
        popped = stack[mark - below : mark] + stack[mark + 1 :]
        del stack[mark - below :]
        return popped
    count = len(before)
    if len(stack) < count or any(item is _MARK for item in stack[len(stack) - count :]):
        return None
    popped = stack[len(stack) - count :] if count else []
    del stack[len(stack) - count :]
    return popped
