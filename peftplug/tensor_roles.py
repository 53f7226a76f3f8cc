"""What a layer method tells the core about its tensors, so that conversion, the formats and
tensor parallelism handle any method alike.

A layer method saves, for each module it adapts, a few tensors named ``<module path>.<suffix>``
in HF PEFT's layout (``lora_A.weight`` ``[r, in]``). Each suffix gets a :class:`TensorRole`
whose axes say what every dimension follows:

- ``"out"``: the base layer's output features (split with a column-parallel layer, concatenated
  when modules are fused: LoRA's ``lora_B`` rows, IA3's output vector, a bias);
- ``"in"``: its input features (split with a row-parallel layer; shared by fused modules);
- ``"rank"``: a rank the method sums over in a product of its tensors, so zero rows or columns
  add nothing (LoRA's ``r``): fused modules stack their ranks, other modules pad with zeros;
- ``"one"``: a broadcast axis of size 1.

A framework whose linear layers store ``[in, out]`` (Paddle) holds every 2-D tensor transposed;
the convention that says so is the format's, not the method's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Axis = Literal["out", "in", "rank", "one"]
AXES = ("out", "in", "rank", "one")


@dataclass(frozen=True)
class TensorRole:
    """One tensor a layer method saves per adapted module.

    ``suffix``: its name below the module path (``"lora_A.weight"``, ``"ia3_l"``).
    ``layouts``: the axes of each shape it may have, in HF PEFT's layout; several when the
    method's options decide (IA3's ``ia3_l`` is ``("out", "one")``, or ``("one", "in")`` for a
    feed-forward module). ``required``: False when only some configs save it (LoRA's trained
    bias); such a tensor does not by itself make a module adapted. ``fill``: the value a missing
    part takes when fused modules are joined (IA3: 1, a delta: 0); None when every part must
    have it.
    """

    suffix: str
    layouts: tuple[tuple[Axis, ...], ...]
    required: bool = True
    fill: float | None = None

    def layout(self, shape: tuple[int, ...]) -> tuple[Axis, ...]:
        """The layout ``shape`` has: the first of ``layouts`` of its rank whose ``"one"`` axes are 1."""
        for layout in self.layouts:
            if len(layout) == len(shape) and all(size == 1 for axis, size in zip(layout, shape) if axis == "one"):
                return layout
        raise ValueError(f"tensor {self.suffix!r} of shape {list(shape)} fits none of its layouts {self.layouts}")

    def size_of(self, shape: tuple[int, ...], axis: Axis) -> int | None:
        """The size of ``axis`` in ``shape``, None when the layout has no such axis."""
        layout = self.layout(shape)
        return shape[layout.index(axis)] if axis in layout else None


def check_roles(roles: Iterable[TensorRole]) -> str | None:
    """A message naming the first malformed role, or None when every role is well formed."""
    seen: set[str] = set()
    for role in roles:
        if not isinstance(role, TensorRole):
            return f"tensors holds {role!r}, not a TensorRole"
        if not role.suffix or role.suffix in seen:
            return f"tensor role suffix {role.suffix!r} is empty or declared twice"
        seen.add(role.suffix)
        if not role.layouts:
            return f"tensor role {role.suffix!r} declares no layout"
        for layout in role.layouts:
            unknown = [axis for axis in layout if axis not in AXES]
            if unknown:
                return f"tensor role {role.suffix!r}: unknown axis {unknown[0]!r} (axes are {', '.join(AXES)})"
    return None


def roles_by_suffix(roles: Iterable[TensorRole]) -> dict[str, TensorRole]:
    """``roles`` by suffix, the longest first, so that :func:`split_suffix` picks
    ``base_layer.bias`` before a shorter suffix it ends with."""
    return {role.suffix: role for role in sorted(roles, key=lambda role: -len(role.suffix))}


def split_suffix(name: str, roles: Mapping[str, TensorRole]) -> tuple[str, TensorRole | None]:
    """``("<module path>", role)`` for a parameter name ending in a role's suffix, else
    ``(name, None)``; ``roles`` as :func:`roles_by_suffix` orders them."""
    for suffix, role in roles.items():
        if name.endswith("." + suffix):
            return name[: -len(suffix) - 1], role
    return name, None


__all__ = ["AXES", "Axis", "TensorRole", "check_roles", "roles_by_suffix", "split_suffix"]
