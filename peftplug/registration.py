"""What plugins register: backends, methods, formats, naming conventions and architectures.

These are plain descriptions, cheap to build and free of framework imports; the registries in
:mod:`peftplug.registry` check them and the core looks them up by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from peftplug.tensor_roles import TensorRole

if TYPE_CHECKING:
    from peftplug.config import AdapterConfig
    from peftplug.files import FileContent
    from peftplug.state import AdapterState


def load_declared(spec: str, owner: str) -> Any:
    """The object a ``"module:attribute"`` declaration names, imported now; ``owner`` (a
    method or backend name) is named when it cannot be imported."""
    module_name, _, attribute = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ImportError(f"{owner!r} declares {spec!r}, which cannot be imported: {error}") from error


@dataclass(frozen=True)
class Backend:
    """A framework peftplug can run adapters on.

    ``implementation`` is ``"module:attribute"`` of a class implementing
    :class:`peftplug.backend.BackendOps`; it is imported only when a model of this framework is
    used, so registering a backend never imports its framework.

    The command line's parts (:mod:`peftplug.app.backend_parts` documents each interface); a
    backend without them works from Python but not in ``peftplug train`` / ``merge`` / ``generate``:

    - ``requires``: the packages the app needs for this backend, checked before anything runs;
    - ``extra``: the pip extra that installs them (``"peftplug[torch]"``), named when one is missing;
    - ``quiet_packages``: packages whose own warnings and INFO logging a command hides;
    - ``recipe_runner``: ``"module:function"`` that trains a validated recipe on this framework;
    - ``model_builder``: ``"module:attribute"`` of the object that builds the tiny models of
      recipes and loads model directories and tokenizers (importable without the framework);
    - ``generator``: ``"module:function"`` that continues a prompt greedily (``peftplug generate``);
    - ``distributed_engines``: the engines a recipe's ``distributed`` section may name, and
      ``launcher``: ``"module:function"`` that runs the command line again on N processes through the
      framework's own launcher (``launch(processes, argv) -> exit code``).

    ``test_driver``: ``"module:Class"`` of the :class:`~peftplug.testing.drivers.Driver` that runs
    :class:`~peftplug.testing.MethodContract` on this framework.

    Each ``"module:attribute"`` is imported on first use (:meth:`part`).
    """

    name: str
    implementation: str
    description: str = ""
    # The registered Convention this framework's models are named in: "hf" for torch
    # (transformers' module trees), "paddle" for paddle (PaddleNLP's); None when none applies.
    convention: str | None = None
    requires: tuple[str, ...] = ()
    extra: str | None = None
    quiet_packages: tuple[str, ...] = ()
    recipe_runner: str | None = None
    model_builder: str | None = None
    generator: str | None = None
    distributed_engines: tuple[str, ...] = ()
    launcher: str | None = None
    test_driver: str | None = None

    def load(self) -> Any:
        """Import the implementation and return an instance of it."""
        module_name, _, attribute = self.implementation.partition(":")
        cls = getattr(importlib.import_module(module_name), attribute)
        return cls()

    def part(self, field_name: str) -> Any:
        """The object one of the app's ``"module:attribute"`` fields names (``"recipe_runner"``),
        imported now; None when the backend does not declare it."""
        spec = getattr(self, field_name)
        return None if spec is None else load_declared(spec, self.name)


@dataclass(frozen=True)
class Method:
    """A PEFT method: its name, its config class, and how it attaches to a model.

    ``kind`` is ``"layer"`` for methods that wrap modules (LoRA, IA3) and ``"prompt"`` for
    methods that prepend virtual tokens (prompt tuning, P-tuning, prefix tuning).

    What conversion, the formats and tensor parallelism need to know of a layer method's saved
    tensors, declared here so that none of them names a method:

    - ``tensors``: a :class:`~peftplug.tensor_roles.TensorRole` per tensor suffix;
    - ``rank_field``: the config field that holds the rank (``"r"``), when tensors have a rank axis;
    - ``rescale_rank``: ``"module:function"``, ``function(config, new_rank) -> config``, called when
      fusing modules changes the rank (LoRA keeps ``scaling`` by scaling ``lora_alpha``);
    - ``module_fields``: config fields listing a subset of the adapted modules, by the axis their
      tensors' layout has (IA3's ``feedforward_modules``: ``"in"``);
    - ``prefix_cache``: True when the state is per-layer attention key/value prefixes, whose
      position convention conversion moves (prefix tuning);
    - ``codecs``: ``{format name: "module:attribute"}``, the method's own codec for a format
      whose files have method-specific fields (PaddleNLP's ``lora_config.json``); the format
      documents the codec's interface.

    ``model_methods``: ``{name: "module:function"}``, methods a model holding the method's adapters
    offers besides the core's (LoRA's ``add_weighted_adapter``): ``model.name(*args)`` calls
    ``function(model, *args)``, imported on first use.

    ``card_tags`` are the tags HF PEFT's model card gives an adapter of the method (``"lora"``).
    ``exports``: ``{name: "module:attribute"}``, public names the method adds to ``peftplug``
    besides its config class (which is one always), imported the first time they are asked for.
    ``namespaces``: ``{namespace: {name: "module:attribute"}}``, public names the method adds to
    the module ``peftplug.<namespace>`` (``"paddlenlp"``: PaddleNLP's API, ``peftplug.paddlenlp``),
    imported the same way.

    How the method is built on each framework, imported the first time a model of it is adapted:

    - ``layers``: ``{backend name: "module:function"}`` of a layer method,
      ``function(layer, name, config, adapter_name)``: the adapter layer to put in place of
      ``layer`` (``layer`` itself with the adapter added when it already is one), or None for a
      layer type it does not wrap;
    - ``prompt_encoders``: ``{backend name: "module:function"}`` of a prompt method,
      ``function(config, model)``: the virtual-token encoder, built from the config (its shape
      fields filled from the model) and the user's base model.

    A plugin's ``peftplug_wrap_layer`` or ``peftplug_build_prompt_encoder`` hook is asked first
    and overrides these declarations.
    """

    name: str
    config_class: type[AdapterConfig]
    kind: Literal["layer", "prompt"] = "layer"
    description: str = ""
    tensors: tuple[TensorRole, ...] = ()
    rank_field: str | None = None
    rescale_rank: str | None = None
    module_fields: Mapping[str, str] = field(default_factory=dict)
    prefix_cache: bool = False
    codecs: Mapping[str, str] = field(default_factory=dict)
    card_tags: tuple[str, ...] = ()
    exports: Mapping[str, str] = field(default_factory=dict)
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    model_methods: Mapping[str, str] = field(default_factory=dict)
    layers: Mapping[str, str] = field(default_factory=dict)
    prompt_encoders: Mapping[str, str] = field(default_factory=dict)

    @property
    def peft_type(self) -> str:
        """The ``peft_type`` string that adapter_config.json files use for this method."""
        return self.config_class.peft_type

    def role(self, suffix: str) -> TensorRole | None:
        """The declared role of tensor ``suffix``, None when the method declares none."""
        return next((role for role in self.tensors if role.suffix == suffix), None)

    def model_method(self, name: str) -> Callable[..., Any] | None:
        """The function of declared model method ``name``, imported now; None when not declared."""
        spec = self.model_methods.get(name)
        return None if spec is None else load_declared(spec, self.name)

    def layer_factory(self, backend: str) -> Callable[..., Any] | None:
        """The declared layer factory for ``backend``, imported now; None when none is declared."""
        spec = self.layers.get(backend)
        return None if spec is None else load_declared(spec, self.name)

    def prompt_encoder_factory(self, backend: str) -> Callable[..., Any] | None:
        """The declared prompt-encoder factory for ``backend``, imported now; None when none is
        declared."""
        spec = self.prompt_encoders.get(backend)
        return None if spec is None else load_declared(spec, self.name)


class Format:
    """An on-disk adapter format. Subclass it and register an instance.

    A format turns files into an :class:`~peftplug.state.AdapterState` and back. It never
    writes to disk itself: :meth:`write` returns the files' contents and the core places them
    atomically, so an interrupted save never leaves a half-written adapter.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # The registered Convention whose module names (and prefix-tuning positions) the files hold
    # ("hf", "paddle"), or None: the tree of the model that saved them, as it is.
    convention: ClassVar[str | None] = None
    # Whether a save in this format also writes HF PEFT's model card (README.md) beside it.
    model_card: ClassVar[bool] = False

    def detect(self, directory: Path) -> bool:
        """Return True when ``directory`` holds an adapter in this format."""
        raise NotImplementedError(f"format {self.name!r} does not implement detect()")

    def files(self, directory: Path) -> list[Path]:
        """The files of an adapter in this format that ``directory`` holds (those ``read`` would
        take). A save in any format removes them unless it rewrote them, so that the directory
        holds one adapter and the next load cannot read an older one. None known by default."""
        return []

    def read(self, directory: Path) -> AdapterState:
        """Read the adapter in ``directory``; raise AdapterLoadError naming what is wrong."""
        raise NotImplementedError(f"format {self.name!r} does not implement read()")

    def write(self, state: AdapterState, *, safe_serialization: bool = True) -> dict[str, FileContent]:
        """Return ``{file name: content}`` for ``state``; the caller writes them atomically.

        A content is the file's bytes, or a function that writes them to a binary file handed
        to it (:data:`peftplug.files.FileContent`; large tensors stream to disk that way)."""
        raise NotImplementedError(f"format {self.name!r} does not implement write()")


WeightLayout = Literal["out_in", "in_out"]


@dataclass(frozen=True)
class Convention:
    """A naming convention: how one library names a model's modules and lays out its tensors.

    Architectures map their modules across conventions by name (:class:`ModuleMap`), formats
    and backends say which convention their files and models are in, and
    :mod:`peftplug.interop.name_maps` translates between any two. ``label`` is the short name
    messages use (``"HF"``, ``"PaddleNLP"``), ``library`` the library's own (``"transformers"``).
    ``linear_weight`` is how the library's Linear layer stores its 2-D weight: ``"out_in"``
    (torch ``nn.Linear``: ``[out, in]``) or ``"in_out"`` (``paddle.nn.Linear``: ``[in, out]``).
    ``canonical``: the convention an :class:`~peftplug.state.AdapterState` is canonical in
    (HF's); at most one registered convention is.
    """

    name: str
    description: str = ""
    label: str = ""
    library: str = ""
    linear_weight: WeightLayout = "out_in"
    canonical: bool = False


@dataclass(frozen=True)
class ModuleMap:
    """One module of a model family, named in each convention that knows it.

    ``names`` maps a convention's name to a dotted module path in which ``{n}`` stands for an
    integer (a layer index), filled in order: ``{"hf": "model.layers.{n}.self_attn.q_proj",
    "paddle": "llama.layers.{n}.self_attn.q_proj"}``. A path is a tuple when one convention keeps
    in several modules what another fuses: GPT-2's ``c_attn`` is PaddleNLP GPT's ``q_proj``,
    ``k_proj``, ``v_proj``; PaddleNLP Llama's ``qkv_proj`` (``fuse_attention_qkv``) is HF's
    ``q_proj``, ``k_proj``, ``v_proj``. ``layout`` says how the parts sit on the fused output
    axis: ``"concat"`` (contiguous, in order; equal parts when split) or ``"kv_groups"`` (per
    key/value head group: that group's query heads, its key head, its value head; split with
    the model's head counts).

    ``kind`` says how the 2-D ``weight`` is laid out in each convention: ``"linear"`` (the
    convention's Linear layout, :attr:`Convention.linear_weight`: it transposes between
    ``[out, in]`` and ``[in, out]`` conventions), ``"conv1d"`` (transformers' ``Conv1D``:
    ``[in, out]`` in the canonical convention, the Linear layout in the others) or ``"same"``
    (embeddings, norms, heads that every convention stores alike). ``params`` renames
    parameters per convention (``{convention: {canonical name: that convention's name}}``),
    e.g. Bloom's ``lm_head.weight`` is ``lm_head.decoder_weight`` in PaddleNLP.
    """

    names: Mapping[str, str | tuple[str, ...]]
    kind: Literal["linear", "conv1d", "same"] = "same"
    params: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    layout: Literal["concat", "kv_groups"] = "concat"

    def paths(self, convention: str) -> tuple[str, ...]:
        """The module's path pattern(s) in ``convention`` (several for a module it keeps in
        parts); empty when the convention does not name this module."""
        value = self.names.get(convention, ())
        return (value,) if isinstance(value, str) else tuple(value)

    def path(self, convention: str) -> str | None:
        """The module's one path pattern in ``convention``; None when it keeps the module in
        parts or does not name it."""
        value = self.names.get(convention)
        return value if isinstance(value, str) else None

    def canonical_param(self, param: str, convention: str) -> str:
        """The canonical name of ``param`` (the name below the module, e.g. ``"weight"``) as
        ``convention`` names it."""
        return {v: k for k, v in self.params.get(convention, {}).items()}.get(param, param)

    def param_name(self, param: str, source: str, target: str) -> str:
        """``param`` as ``source`` names it, named as ``target`` names it."""
        canonical = self.canonical_param(param, source)
        return self.params.get(target, {}).get(canonical, canonical)


@dataclass(frozen=True)
class PrefixCache:
    """How one convention lays out and positions a family's prefix-tuning cache.

    ``order``: ``"interleaved"`` (k0, v0, k1, v1, ...: HF PEFT) or ``"sections"``
    (k0..k(L-1), v0..v(L-1): PaddleNLP's ``split(2)``) for the ``2 * layers`` blocks the prefix
    encoder's output ``[T, 2 * layers * token_dim]`` is read as; None when the library has no
    prefix tuning for the family. ``positions``: ``"offset"`` (position ids of the input start
    at T, after the prefix), ``"restart"`` (they start at 0) or ``"alibi"`` (no position ids:
    ALiBi biases from the attention mask, prefix included). ``postprocess`` names the library's
    function that turns the encoder output into the cache (PaddleNLP's
    ``paddlenlp.peft.prefix.llama_postprocess_past_key_value``), when it has one.
    """

    order: Literal["interleaved", "sections"] | None
    positions: Literal["offset", "restart", "alibi"]
    postprocess: str | None = None


@dataclass(frozen=True)
class PrefixCacheLayout:
    """How prefix tuning's key/value cache is laid out for a family: a :class:`PrefixCache`
    per convention (``{"hf": PrefixCache("interleaved", "offset"), "paddle": ...}``)."""

    conventions: Mapping[str, PrefixCache]

    def of(self, convention: str) -> PrefixCache | None:
        """The cache's order and positions in ``convention``; None when it states none."""
        return self.conventions.get(convention)


@dataclass(frozen=True)
class Architecture:
    """A model family: the ``model_type`` values it answers to and its default targets.

    ``model_types`` and ``default_targets`` are the canonical convention's (HF's).
    ``default_targets`` maps a key to the module names a config takes when it leaves the field
    unset, as HF PEFT's per-family defaults do: the method's name (``"lora"``, ``"ia3"``) for
    ``target_modules``, other keys (``"ia3_feedforward"``) for the fields a config class names
    in ``default_target_fields``.

    Across conventions: ``convention_model_types`` are the family's ``model_type`` values in
    other conventions (``{"paddle": ("gpt",)}``); ``modules`` maps every parameter-holding
    module across conventions (:class:`ModuleMap`; empty when no map is known);
    ``convention_default_targets`` are other conventions' defaults (PaddleNLP's: regexes, as
    its ``target_modules`` take them); ``prefix_cache`` is the prefix-tuning cache layout
    (:class:`PrefixCacheLayout`), None when unknown. Every convention named must be registered.
    The functions that use them live in :mod:`peftplug.interop.name_maps`.
    """

    name: str
    model_types: tuple[str, ...]
    default_targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    convention_model_types: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    modules: tuple[ModuleMap, ...] = ()
    convention_default_targets: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    prefix_cache: PrefixCacheLayout | None = None

    @property
    def conventions(self) -> tuple[str, ...]:
        """The conventions this family's module map names, in the order they first appear."""
        return tuple(dict.fromkeys(name for module in self.modules for name in module.names))

    def named_conventions(self) -> tuple[str, ...]:
        """Every convention any of the family's fields names: what registration checks."""
        named = [*self.conventions, *self.convention_model_types, *self.convention_default_targets]
        named += [c for module in self.modules for c in module.params]
        named += list(self.prefix_cache.conventions) if self.prefix_cache else []
        return tuple(dict.fromkeys(named))
