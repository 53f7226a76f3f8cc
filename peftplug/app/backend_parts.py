"""What a backend gives the command line, and how the app finds it.

A backend declares its app parts on its :class:`~peftplug.registration.Backend` registration
(``recipe_runner``, ``model_builder``, ``generator``); the app looks them up here by backend
name and never names a framework. The interfaces:

- a recipe runner is ``run(recipe, data, log, progress) -> RunResult``: build the recipe's base
  model, wrap it with the recipe's method, and train it with
  :func:`peftplug.app.recipe_loop.train_and_save`;
- a model builder is a :class:`ModelBuilder`;
- a generator is ``generate(model, tokenizer, text, max_new_tokens) -> str``: the greedy
  continuation of ``text`` (new tokens only, decoded) by a peft model of the backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from peftplug.errors import PeftplugError

if TYPE_CHECKING:
    from peftplug.app.recipe import ModelSpec
    from peftplug.registration import Backend


class ModelBuilder(Protocol):
    """A backend's models for the app. Importing it never imports the framework: the recipe
    checks read its attributes before anything is built.

    ``library`` is the model library that loads a saved model alone (``"transformers"``);
    ``tiny_architectures`` the built-in architectures (:data:`peftplug.app.recipe.TINY_ARCHITECTURES`)
    it builds; ``weight_files`` the glob patterns of the weight files it reads from a model
    directory; ``task_types`` the adapter task types :meth:`load` serves (None: any).
    """

    library: str
    tiny_architectures: tuple[str, ...]
    weight_files: tuple[str, ...]
    task_types: tuple[str, ...] | None

    def recognises(self, directory: Path) -> bool:
        """True when the model directory was written by this backend's library."""

    def build(self, spec: ModelSpec, tokenizer: Any) -> Any:
        """The recipe's base model in eval mode: the tiny ``spec.architecture`` with random
        weights drawn from ``spec.seed`` (vocabulary and special tokens from ``tokenizer``), or
        the model directory ``spec.path``."""

    def load(self, directory: str, task_type: str | None, **options: Any) -> Any:
        """The model in ``directory``, in eval mode, with the head ``task_type`` needs;
        ``options`` are the library's loading keywords (``AutoPeftModel*`` passes
        ``torch_dtype``, ``device_map``, ``low_cpu_mem_usage`` where a user gave them)."""

    def load_tokenizer(self, directory: str) -> Any:
        """The library's own tokenizer saved in ``directory``."""


class MissingPartError(PeftplugError, NotImplementedError):
    """A registered backend declares no part the command needs."""


def backend(name: str, manager: Any = None) -> Backend:
    """The registration of backend ``name`` (a registry error names the registered ones)."""
    from peftplug.manager import get_plugin_manager

    return (manager or get_plugin_manager()).backends.get(name)


def part(name: str, field_name: str, what: str, manager: Any = None) -> Any:
    """Backend ``name``'s app part ``field_name``, imported; ``what`` names it in the error
    raised when the backend declares none."""
    found = backend(name, manager).part(field_name)
    if found is None:
        raise MissingPartError(f"backend {name!r} is registered but peftplug has no {what} for it")
    return found


def model_builder(name: str, manager: Any = None) -> ModelBuilder:
    """Backend ``name``'s :class:`ModelBuilder`."""
    return part(name, "model_builder", "model builder", manager)


def builders(manager: Any = None) -> dict[str, ModelBuilder]:
    """Every registered backend's :class:`ModelBuilder`, by backend name (those that have one)."""
    from peftplug.manager import get_plugin_manager

    found = {item.name: item.part("model_builder") for item in (manager or get_plugin_manager()).backends}
    return {name: builder for name, builder in found.items() if builder is not None}
