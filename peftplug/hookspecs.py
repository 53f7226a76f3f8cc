"""The plugin contract of peftplug: every hook the core calls, documented hook by hook.

A plugin is any module or object with functions marked ``@peftplug.hookimpl`` and named like the
specs below. The built-in backends, methods and formats are plugins of exactly this kind.

Collecting hooks are called on every plugin and their results gathered; a *firstresult* hook
stops at the first plugin that returns something other than ``None``. Plugins registered later
(third-party entry points) are asked before the built-ins, so a third party can take over a case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftplug.markers import hookspec

if TYPE_CHECKING:
    from peftplug.config import AdapterConfig
    from peftplug.registration import Architecture, Backend, Convention, Format, Method
    from peftplug.state import AdapterState


@hookspec
def peftplug_register_backends() -> Backend | list[Backend] | None:
    """Declare frameworks this plugin can run adapters on.

    Returns a :class:`~peftplug.registration.Backend` or a list of them. Collecting: each
    plugin's result is added to the backend registry; a name registered twice is an error that
    names both plugins. The backend's implementation is imported only when a model of its
    framework is used, so this hook must not import the framework.
    """


@hookspec
def peftplug_register_methods() -> Method | list[Method] | None:
    """Declare PEFT methods (LoRA, IA3, ...) this plugin provides.

    Returns a :class:`~peftplug.registration.Method` (its name, its config class, and whether it
    wraps layers or prepends virtual tokens) or a list of them. Collecting. The config class's
    ``peft_type`` is what ``adapter_config.json`` files name, so it must be unique too.
    """


@hookspec
def peftplug_register_formats() -> Format | list[Format] | None:
    """Declare on-disk adapter formats (HF PEFT's, PaddleNLP's, ...).

    Returns a :class:`~peftplug.registration.Format` or a list of them. Collecting. A format
    converts between files and an :class:`~peftplug.state.AdapterState`; it never imports a
    framework to do so.
    """


@hookspec
def peftplug_register_conventions() -> Convention | list[Convention] | None:
    """Declare naming conventions: how a library names a model's modules and lays out its tensors.

    Returns a :class:`~peftplug.registration.Convention` or a list of them. Collecting; a name
    registered twice is an error naming both plugins, and at most one convention may be
    canonical (the one :class:`~peftplug.state.AdapterState` is in: HF's). Architectures map
    their modules across conventions by name, formats (:attr:`Format.convention
    <peftplug.registration.Format>`) and backends (:attr:`Backend.convention
    <peftplug.registration.Backend>`) say which one they use, and
    :mod:`peftplug.interop.name_maps` translates names between any two that a family maps.
    """


@hookspec
def peftplug_register_architectures() -> Architecture | list[Architecture] | None:
    """Declare model families: their ``model_type`` names and default target modules per method.

    Returns an :class:`~peftplug.registration.Architecture` or a list of them. Collecting; a
    name registered twice is an error naming both plugins. Across naming conventions an
    architecture also gives its ``model_type`` names and default targets per convention, the
    map of every module across conventions (:class:`~peftplug.registration.ModuleMap`: renames,
    which weights transpose, fused modules one convention splits) and the prefix-tuning cache
    layout per convention (:class:`~peftplug.registration.PrefixCacheLayout`); every convention
    it names must be registered (:func:`peftplug_register_conventions`), else registration
    fails naming the architecture and the convention. Conversion
    and :func:`peftplug.interop.weights.copy_base_weights` read them through
    :mod:`peftplug.interop.name_maps`. A third party adds a family this way.
    """


@hookspec(firstresult=True)
def peftplug_detect_backend(model: Any) -> str | None:
    """Tell which registered backend ``model`` belongs to.

    Receives the user's base model. Returns a backend name (``"torch"``, ``"paddle"``, ...)
    or ``None`` for "not mine". First result wins. Implementations look the framework up in
    ``sys.modules`` before any ``isinstance`` check, so that detection never imports a framework
    the user has not imported.
    """


@hookspec(firstresult=True)
def peftplug_wrap_layer(
    method: str, backend: str, layer: Any, name: str, config: AdapterConfig, adapter_name: str
) -> Any | None:
    """Override: build the adapter layer that wraps ``layer``, or add ``adapter_name`` to it.

    A method normally declares its layers instead (``Method.layers``: a factory per backend);
    the core asks this hook first and uses the declaration only when no plugin answers, so an
    implementation overrides a declaration or fills a (method, backend) pair the method does
    not declare (a backend plugin answering for a method it did not write).

    Receives the method name (``"lora"``), the backend name (``"torch"``), the module that a
    target pattern matched, its dotted ``name`` in the base model (for per-module overrides
    such as ``rank_pattern``), the adapter's config and the adapter's name.
    When ``layer`` is already an adapter layer of this method, the implementation adds the new
    adapter to it and returns it. Returns the layer to put in place of ``layer``, or ``None``
    for "not my (method, backend) pair or not a layer type I support". First result wins.
    """


@hookspec(firstresult=True)
def peftplug_build_prompt_encoder(method: str, backend: str, config: AdapterConfig, model: Any) -> Any | None:
    """Override: build the virtual-token encoder of a prompt-learning method (prompt tuning,
    P-tuning, prefix tuning: methods registered with ``kind="prompt"``).

    A method normally declares its encoders instead (``Method.prompt_encoders``: a factory per
    backend); the core asks this hook first and uses the declaration only when no plugin
    answers.

    Receives the method name (``"prompt_tuning"``), the backend name (``"torch"``), the
    adapter's config with the model-shape fields already filled from the model
    (``num_virtual_tokens``, ``token_dim``, ``num_layers``, ``num_attention_heads``,
    ``num_transformer_submodules``), and the user's base model (for its word embeddings, e.g.
    prompt tuning's TEXT init). Returns the encoder, an object of the backend's module type
    implementing :class:`~peftplug.backend.PromptEncoder` plus what the backend's model needs to
    run it, or ``None`` for "not my (method, backend) pair". First result wins. The core hands
    the encoder to the backend's ``attach_prompt_encoder``; ``config.inference_mode`` tells
    whether it will be trained (HF PEFT keeps only the output table of an inference encoder).
    """


@hookspec
def peftplug_validate_config(config: AdapterConfig, model: Any, backend: str) -> None:
    """Check a config against the model it is about to be applied to; raise to refuse.

    Called by ``get_peft_model`` and ``add_adapter`` before any module is touched. Collecting:
    every plugin may veto by raising an exception (preferably a
    :class:`~peftplug.errors.PeftplugError` naming the field at fault). Returns nothing.
    """


@hookspec
def peftplug_adapter_injected(model: Any, adapter_name: str, config: AdapterConfig, wrapped: list[str]) -> None:
    """Notify that an adapter was injected into ``model`` (the peftplug model).

    ``wrapped`` lists the dotted names of the base-model modules that received the adapter.
    Collecting; for logging, bookkeeping or extra set-up. Returns nothing.
    """


@hookspec
def peftplug_before_save(state: AdapterState, format: str) -> None:
    """Transform an adapter's state in place just before a format writes it.

    ``state`` holds the config and the tensors (numpy arrays, HF PEFT names and layout);
    ``format`` is the name of the format about to write it. Collecting. Returns nothing.
    """


@hookspec
def peftplug_after_load(state: AdapterState, format: str) -> None:
    """Transform an adapter's state in place just after a format has read it.

    Same arguments as :func:`peftplug_before_save`; called before the tensors reach a model.
    Collecting. Returns nothing.
    """
