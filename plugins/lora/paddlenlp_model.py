"""What ``peftplug.paddlenlp``'s ``LoRAModel`` does on every framework, written once over the
few operations each framework's class gives (its state tensors, which sublayers are LoRA layers,
freezing a tensor): PaddleNLP's parameter names, its freezing rules, the trainable state dict,
merging and restoring.

peftplug's LoRA layer keeps the base layer as ``base_layer`` and its matrices per adapter
(``lora_A.default``, on torch ``lora_A.default.weight``); PaddleNLP's LoRALinear *is* the linear
(``q_proj.weight``, ``q_proj.lora_A``). This class speaks PaddleNLP's names wherever PaddleNLP
does: ``trainable_modules``, ``get_trainable_state_dict``, ``set_state_dict`` and the saved files.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from peftplug.model.peft_model import DEFAULT_ADAPTER
from peftplug.plugins.lora.paddlenlp_api import LoRAConfig

# A peftplug LoRA layer's own parameters, as PaddleNLP's LoRALinear names them.
_LAYER_PARAMETER = re.compile(rf"base_layer\.(?P<base>.+)|(?P<lora>lora_[AB])\.{DEFAULT_ADAPTER}(?:\.weight)?")


class PaddleNLPLoRAMethods:
    """Mixed into each framework's ``LoRAModel``, which sets ``lora_config``, ``model`` (the user's
    model) and ``peft_model`` (peftplug's model around it) and implements the three operations."""

    lora_config: LoRAConfig
    model: Any
    peft_model: Any

    # ------------------------------------------------------------ the framework's operations
    def _state_items(self) -> Iterable[tuple[str, Any]]:
        """The model's state tensors (parameters and buffers, the tensors themselves), by name."""
        raise NotImplementedError

    def _adapted_modules(self) -> set[str]:
        """The names of the model's LoRA layers."""
        raise NotImplementedError

    @staticmethod
    def _is_trainable(tensor: Any) -> bool:
        raise NotImplementedError

    @staticmethod
    def _set_trainable(tensor: Any, trainable: bool) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ names
    def named_paddlenlp_parameters(self) -> list[tuple[str, Any]]:
        """The model's state tensors named as PaddleNLP names them (``q_proj.weight``,
        ``q_proj.lora_A``), in state-dict order."""
        adapted = self._adapted_modules()
        named = []
        for name, tensor in self._state_items():
            parts = name.split(".")
            for end in range(len(parts) - 1, 0, -1):
                owner = ".".join(parts[:end])
                if owner in adapted:
                    match = _LAYER_PARAMETER.fullmatch(".".join(parts[end:]))
                    name = f"{owner}.{match['base'] or match['lora']}" if match else name
                    break
            named.append((name, tensor))
        return named

    # ------------------------------------------------------------ training
    def mark_only_lora_as_trainable(self) -> None:
        """Freeze all but the LoRA matrices, the biases ``trainable_bias`` names (``"lora"``: of
        LoRA layers, ``"all"``: every one) and the parameters ``trainable_modules`` matches, as
        PaddleNLP does (a parameter the model holds directly, outside any sublayer, is left as it is)."""
        adapted = self._adapted_modules()
        bias_mode = self.lora_config.trainable_bias
        patterns = self.lora_config.trainable_modules or []
        for name, tensor in self.named_paddlenlp_parameters():
            module, _, leaf = name.rpartition(".")
            if module:
                if module in adapted:
                    trainable = ("bias" in leaf and bias_mode in ("lora", "all")) or "lora" in leaf
                else:
                    trainable = "bias" in leaf and bias_mode == "all"
                self._set_trainable(tensor, trainable)
            if any(re.fullmatch(pattern, name) for pattern in patterns):
                self._set_trainable(tensor, True)

    def get_trainable_state_dict(self) -> OrderedDict:
        """The trainable tensors, by PaddleNLP's names: what a save writes."""
        return OrderedDict(
            (name, tensor) for name, tensor in self.named_paddlenlp_parameters() if self._is_trainable(tensor)
        )

    # ------------------------------------------------------------ merging
    def merge(self) -> None:
        """Fold the LoRA update into the base weights (forward then skips the LoRA matrices)."""
        self.peft_model.merge_adapter()

    def unmerge(self) -> None:
        """Take a merged LoRA update back out of the base weights."""
        self.peft_model.unmerge_adapter()

    def restore_original_model(self) -> Any:
        """The model with its original layers back (``nn.Linear``) and no LoRA: its original outputs."""
        self.unmerge()
        return self.peft_model.unload()
