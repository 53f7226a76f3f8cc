"""The interface a backend implements: what the framework-free core needs from a framework.

A backend plugin registers a :class:`~peftplug.registration.Backend` whose implementation
class satisfies :class:`BackendOps`; the core drives injection, trainability, saving and
loading through these operations and through the adapter layers' own protocol
(:class:`AdapterLayer`), never through a framework import of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np


class AdapterLayer(Protocol):
    """What every adapter layer (a LoRA linear, a modules-to-save copy, ...) offers the core.

    Tensor names in ``export_adapter``/``import_adapter`` are suffixes of HF PEFT keys
    (``"lora_A.weight"``), in HF PEFT's layout, whatever the framework stores.
    """

    adapter_names: list[str]
    merged_adapters: list[str]

    def set_adapter(self, names: list[str], inference_mode: bool = False) -> None:
        """Make ``names`` the active adapters: their parameters trainable unless ``inference_mode``,
        the other adapters' frozen."""

    def set_requires_grad(self, names: list[str], requires_grad: bool = True) -> None:
        """Make the parameters of the adapters ``names`` trainable (or frozen), leaving the others."""

    def enable_adapters(self, enabled: bool) -> None:
        """Turn every adapter of this layer on (the active ones trainable) or off (the base layer
        alone, every adapter frozen)."""

    def delete_adapter(self, name: str) -> None:
        """Remove the adapter ``name`` and its parameters."""

    def merge(self, names: list[str]) -> None:
        """Fold the adapters ``names`` into the base layer's weights (warning, as HF PEFT does,
        about those merged already)."""

    def unsafe_merge(self, names: list[str]) -> str | None:
        """The first adapter of ``names`` whose merge would put NaN or inf in the base weights,
        tried on a copy; None when every merge is finite."""

    def unmerge(self) -> None:
        """Undo every merge, restoring the base weights."""

    def unload(self, merge: bool, names: list[str]) -> Any:
        """The plain module to put back in this layer's place, with ``names`` merged if ``merge``."""

    def export_adapter(self, name: str) -> dict[str, np.ndarray]:
        """The adapter's tensors as numpy arrays, by key suffix, in HF PEFT's layout."""

    def import_adapter(self, name: str, tensors: dict[str, np.ndarray], key_prefix: str) -> set[str]:
        """Copy the tensors this layer owns into adapter ``name``; return the suffixes it took.

        A shape mismatch raises an error naming ``key_prefix + suffix`` and both shapes. Under
        tensor parallelism the tensors are whole (merged) and each rank keeps its piece.
        """

    def mixed_batch_forward(self, row_adapters: list[str], x: Any, *args: Any, **kwargs: Any) -> Any:
        """The forward of a batch whose row ``i`` takes adapter ``row_adapters[i]`` alone
        (``"__base__"``: none), equal to running each row with its adapter; a wrong number of
        rows, or a merged adapter, is a ValueError naming them."""

    def end_mixed_batch(self) -> None:
        """Drop what :meth:`mixed_batch_forward` kept for the steps of one mixed batch."""

    def export_adapter_shard(self, name: str) -> dict[str, tuple[np.ndarray, int | None]]:
        """This rank's piece of each tensor of ``export_adapter``, with the axis (HF PEFT layout)
        it is split on, or None where the rank holds it whole. Never communicates: under tensor
        parallelism ``export_adapter`` gathers (every rank must call it), this does not.
        """


class PromptEncoder(Protocol):
    """What a prompt-learning method's virtual-token encoder offers the core (one per adapter).

    The encoder is built by the method's declared ``prompt_encoders`` factory (or a
    ``peftplug_build_prompt_encoder`` hook that overrides it) and attached to
    the peft model by :meth:`BackendOps.attach_prompt_encoder`; the backend's model runs it in
    forward and generate. Tensors are numpy arrays in HF PEFT's layout.
    """

    def set_trainable(self, trainable: bool) -> None:
        """Make every parameter of the encoder trainable, or freeze it."""

    def export_prompt(self) -> dict[str, np.ndarray]:
        """What HF PEFT saves: ``{"prompt_embeddings": the encoder's output table}``."""

    def export_encoder(self) -> dict[str, np.ndarray]:
        """The encoder's own weights beyond HF PEFT's file (P-tuning's MLP, the prefix
        projection), by name; empty when ``prompt_embeddings`` is the whole state."""

    def import_prompt(self, tensors: dict[str, np.ndarray], encoder_tensors: dict[str, np.ndarray]) -> set[str]:
        """Load ``prompt_embeddings`` (from ``tensors``) and, when given, the encoder's own
        weights; returns the keys of ``tensors`` it took. A missing or misshapen
        ``prompt_embeddings`` raises an error naming it."""


class TensorParallelGroup(Protocol):
    """The ranks a tensor-parallel model is sharded over, as the core's save and load need them.

    Made by :meth:`BackendOps.tensor_parallel` from the framework's own distributed runtime
    (torch: the DTensor device mesh and the default process group's store; Paddle: fleet's model
    parallel group). ``post``/``read`` go through the runtime's key-value store, never through a
    collective, so a rank that failed cannot leave the others blocked past a timeout.
    """

    rank: int
    degree: int
    engine: str  # what shards the model, for messages: "tensor-parallel", "fully_shard (FSDP2)" ...

    def gather(self, payload: Any) -> list[Any] | None:
        """Collective: every rank's ``payload`` (picklable: numpy arrays, plain containers) in rank
        order on rank 0, None elsewhere."""

    def post(self, key: str, value: str) -> None:
        """Publish ``value`` under ``key`` for every rank to read."""

    def read(self, keys: list[str], timeout: float) -> dict[str, str]:
        """The values posted under ``keys``, waiting up to ``timeout`` seconds in all; keys not
        posted by then are absent from the result."""

    def local_piece(self, tensor: Any) -> tuple[np.ndarray, int | None]:
        """This rank's piece of ``tensor`` as numpy and the axis it is split on (None: whole)."""


class BackendOps(Protocol):
    """Framework operations the core needs. One instance per backend, made on first use."""

    name: str

    def create_peft_model(self, model: Any, method: Any) -> Any:
        """Wrap ``model`` in this backend's PeftModel class (no adapter injected yet)."""

    def is_adapter_layer(self, module: Any) -> bool:
        """True for layers implementing :class:`AdapterLayer` on this backend."""

    def named_modules(self, root: Any) -> Iterator[tuple[str, Any]]:
        """(dotted name, module) pairs, not descending into adapter layers."""

    def get_module(self, root: Any, name: str) -> Any:
        """The submodule at dotted ``name``."""

    def replace_module(self, root: Any, name: str, new: Any) -> None:
        """Put ``new`` in place of the submodule at dotted ``name``."""

    def named_parameters(self, root: Any) -> Iterator[tuple[str, Any]]:
        """(dotted name, parameter) pairs, each shared parameter once."""

    def numel(self, parameter: Any) -> int:
        """Number of values in ``parameter``."""

    def is_trainable(self, parameter: Any) -> bool:
        """True when the optimiser may update ``parameter``."""

    def set_trainable(self, parameter: Any, trainable: bool) -> None:
        """Mark ``parameter`` trainable or frozen."""

    def to_numpy(self, tensor: Any) -> np.ndarray:
        """A numpy copy of ``tensor`` in the backend's own layout."""

    def from_numpy(self, array: np.ndarray) -> Any:
        """A new tensor of the framework holding ``array`` (on the CPU)."""

    def copy_into(self, parameter: Any, array: np.ndarray, key: str) -> None:
        """Copy ``array`` into ``parameter`` (a parameter or buffer), cast to its dtype; a shape
        mismatch names ``key`` and both shapes. A sharded tensor takes the whole array and keeps
        this rank's piece."""

    def state_tensors(self, model: Any) -> dict[str, Any]:
        """Every parameter and persistent buffer of ``model`` by state-dict name, as the tensors
        themselves: read them with :meth:`to_numpy` (which gathers a sharded one whole), write them
        with :meth:`copy_into`. Names that share one tensor (tied weights) give the same object."""

    def model_type(self, model: Any) -> str | None:
        """The model family's ``model_type`` (from its config), or None."""

    def is_linear(self, module: Any) -> bool:
        """True for dense projection layers (for ``target_modules="all-linear"``)."""

    def output_layer_names(self, model: Any) -> list[str]:
        """Names of the output projection(s) that ``all-linear`` leaves out (``lm_head``)."""

    def wrap_module_to_save(self, module: Any, adapter_name: str) -> Any:
        """A layer keeping a trainable copy of ``module`` per adapter (``modules_to_save``)."""

    def model_config(self, model: Any) -> Any:
        """The model's config object (transformers' or PaddleNLP's), or None."""

    def attach_prompt_encoder(self, peft_model: Any, adapter_name: str, encoder: Any, config: Any) -> None:
        """Attach a prompt-learning encoder to ``peft_model`` under ``adapter_name``.

        The backend keeps it where its model's forward and generate find it (HF PEFT's place:
        ``peft_model.prompt_encoder[adapter_name]``, beside ``peft_model.word_embeddings``, the
        base model's input embeddings), and freezes the base model. A task type or model the
        backend cannot run virtual tokens for is an error naming it.
        """

    def prompt_encoders(self, peft_model: Any) -> dict[str, Any]:
        """The attached prompt encoders (:class:`PromptEncoder`), by adapter name."""

    def remove_prompt_encoder(self, peft_model: Any, adapter_name: str) -> None:
        """Detach the prompt encoder of ``adapter_name`` and drop its parameters."""

    def keep_adapter_in_base_dtype(self, layer: Any, adapter_name: str) -> None:
        """Cast adapter ``adapter_name``'s parameters in adapter layer ``layer`` to its base
        weight's dtype (``from_pretrained(autocast_adapter_dtype=False)``). Optional: on a backend
        without it that keyword is refused, naming it."""

    def tensor_parallel(self, model: Any) -> TensorParallelGroup | None:
        """The tensor-parallel group ``model``'s weights are sharded over, or None when it is not
        sharded (a group of degree 1 counts as not sharded). Optional: the core treats a
        backend without it as never sharded.

        When there is one, adapter layers shard their tensors the way the base layer is sharded
        (LoRA: A whole and B split on the output axis for a column-parallel linear, A split on
        the input axis and B whole for a row-parallel one), ``export_adapter`` gathers,
        ``import_adapter`` of whole tensors keeps each rank's piece, and ``export_adapter_shard``
        gives the local pieces; ``save_pretrained`` then merges or writes per-rank files
        (:mod:`peftplug.distributed.tp_save`, :mod:`peftplug.distributed.tp_shards`).
        """

    def prepare_for_kbit_training(self, model: Any, use_gradient_checkpointing: bool, checkpointing: dict) -> None:
        """Prepare a quantized base for training in place
        (:func:`peftplug.model.kbit.prepare_model_for_kbit_training`); a backend without
        quantized bases raises :class:`~peftplug.errors.BackendError` saying so."""
