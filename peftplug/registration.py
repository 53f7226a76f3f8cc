"""What plugins register: backends, methods, formats and architectures.

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
    """

    name: str
    implementation: str
    description: str = ""

    def load(self) -> Any:
        """Import the implementation and return an instance of it."""
        module_name, _, attribute = self.implementation.partition(":")
        cls = getattr(importlib.import_module(module_name), attribute)
        return cls()


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

    ``card_tags`` are the tags HF PEFT's model card gives an adapter of the method (``"lora"``).
    ``exports``: ``{name: "module:attribute"}``, public names the method adds to ``peftplug``
    besides its config class (which is one always), imported the first time they are asked for.

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
    layers: Mapping[str, str] = field(default_factory=dict)
    prompt_encoders: Mapping[str, str] = field(default_factory=dict)

    @property
    def peft_type(self) -> str:
        """The ``peft_type`` string that adapter_config.json files use for this method."""
        return self.config_class.peft_type

    def role(self, suffix: str) -> TensorRole | None:
        """The declared role of tensor ``suffix``, None when the method declares none."""
        return next((role for role in self.tensors if role.suffix == suffix), None)

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
    # Whose module names (and prefix-tuning positions) the files hold: "hf" (HF transformers'
    # tree), "paddle" (PaddleNLP's), or None: the tree of the model that saved them, as it is.
    convention: ClassVar[str | None] = None
    # Whether a save in this format also writes HF PEFT's model card (README.md) beside it.
    model_card: ClassVar[bool] = False

    def detect(self, directory: Path) -> bool:
        """Return True when ``directory`` holds an adapter in this format."""
        raise NotImplementedError(f"format {self.name!r} does not implement detect()")

    def read(self, directory: Path) -> AdapterState:
        """Read the adapter in ``directory``; raise AdapterLoadError naming what is wrong."""
        raise NotImplementedError(f"format {self.name!r} does not implement read()")

    def write(self, state: AdapterState, *, safe_serialization: bool = True) -> dict[str, FileContent]:
        """Return ``{file name: content}`` for ``state``; the caller writes them atomically.

        A content is the file's bytes, or a function that writes them to a binary file handed
        to it (:data:`peftplug.files.FileContent`; large tensors stream to disk that way)."""
        raise NotImplementedError(f"format {self.name!r} does not implement write()")


@dataclass(frozen=True)
class ModuleMap:
    """One module of a model family, named in Hugging Face transformers and in PaddleNLP.

    ``hf`` and ``paddle`` are dotted module paths in which ``{n}`` stands for an integer (a
    layer index), filled in order: ``"model.layers.{n}.self_attn.q_proj"`` <->
    ``"llama.layers.{n}.self_attn.q_proj"``. One side is a tuple when one library fuses what
    the other keeps in several modules: GPT-2's ``c_attn`` is PaddleNLP GPT's ``q_proj``,
    ``k_proj``, ``v_proj``; PaddleNLP Llama's ``qkv_proj`` (``fuse_attention_qkv``) is HF's
    ``q_proj``, ``k_proj``, ``v_proj``. ``layout`` says how the parts sit on the fused output
    axis: ``"concat"`` (contiguous, in order; equal parts when split) or ``"kv_groups"`` (per
    key/value head group: that group's query heads, its key head, its value head; split with
    the model's head counts).

    ``kind`` says how the 2-D ``weight`` is laid out on each side: ``"linear"`` (torch
    ``nn.Linear`` ``[out, in]`` vs Paddle ``nn.Linear`` ``[in, out]``: it transposes),
    ``"conv1d"`` (transformers' ``Conv1D``, already ``[in, out]``: no transpose) or ``"same"``
    (embeddings, norms, heads that both libraries store alike). ``params`` renames parameters
    (HF name -> Paddle name), e.g. Bloom's ``lm_head.weight`` <-> ``lm_head.decoder_weight``.
    """

    hf: str | tuple[str, ...]
    paddle: str | tuple[str, ...]
    kind: Literal["linear", "conv1d", "same"] = "same"
    params: Mapping[str, str] = field(default_factory=dict)
    layout: Literal["concat", "kv_groups"] = "concat"


@dataclass(frozen=True)
class PrefixCacheLayout:
    """How prefix tuning's key/value cache is laid out for a family, on each side.

    The prefix encoder's output ``[T, 2 * layers * token_dim]`` is read as ``2 * layers``
    blocks. ``hf_order`` / ``paddle_order``: ``"interleaved"`` (k0, v0, k1, v1, ...: HF PEFT)
    or ``"sections"`` (k0..k(L-1), v0..v(L-1): PaddleNLP's ``split(2)``); ``paddle_order`` is
    None when PaddleNLP has no prefix tuning for the family. ``hf_positions`` /
    ``paddle_positions``: ``"offset"`` (position ids of the input start at T, after the
    prefix), ``"restart"`` (they start at 0) or ``"alibi"`` (no position ids: ALiBi biases from
    the attention mask, prefix included). ``paddle_postprocess`` names the
    ``paddlenlp.peft.prefix`` function PaddleNLP uses for the family.
    """

    hf_order: Literal["interleaved", "sections"] = "interleaved"
    paddle_order: Literal["interleaved", "sections"] | None = "sections"
    hf_positions: Literal["offset", "restart", "alibi"] = "offset"
    paddle_positions: Literal["offset", "restart", "alibi"] | None = "restart"
    paddle_postprocess: str | None = None


@dataclass(frozen=True)
class Architecture:
    """A model family: the ``model_type`` values it answers to and its default targets.

    ``default_targets`` maps a key to the module names a config takes when it leaves the field
    unset, as HF PEFT's per-family defaults do: the method's name (``"lora"``, ``"ia3"``) for
    ``target_modules``, other keys (``"ia3_feedforward"``) for the fields a config class names
    in ``default_target_fields``.

    Between frameworks: ``paddle_model_types`` are the PaddleNLP ``model_type`` values of the
    family; ``modules`` maps every parameter-holding module between HF transformers and
    PaddleNLP (:class:`ModuleMap`; empty when no map is known); ``paddle_default_targets`` are
    PaddleNLP's defaults (regexes, as its ``target_modules`` take them); ``prefix_cache`` is the
    prefix-tuning cache layout (:class:`PrefixCacheLayout`), None when unknown. The functions
    that use them live in :mod:`peftplug.interop.name_maps`.
    """

    name: str
    model_types: tuple[str, ...]
    default_targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    paddle_model_types: tuple[str, ...] = ()
    modules: tuple[ModuleMap, ...] = ()
    paddle_default_targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    prefix_cache: PrefixCacheLayout | None = None
