"""``transformers.Trainer`` saves and loads a peftplug model as it does HF PEFT's, with no callback.

Trainer recognises HF PEFT's models by class: ``transformers.trainer._is_peft_model`` (an
``isinstance`` check on ``peft.PeftModel``, False when ``peft`` is not installed) decides how it
inspects, resumes and reloads a model, and ``Trainer._save`` calls ``save_pretrained`` only on a
``PreTrainedModel`` or ``peft.PeftModel``; anything else has its whole state dict written, base
weights included (and a model with tied embeddings fails there). This module extends those
points for peftplug's models only:

- ``_is_peft_model`` is also true for a peftplug model, so Trainer inspects the base model's
  forward and labels, and accepts a quantized base under an adapter, as for HF PEFT's;
- ``Trainer._save`` (checkpoints and ``save_model``) writes the adapter files with
  ``save_pretrained`` and no base weights, then what Trainer writes beside any model (tokenizer,
  ``training_args.bin``);
- ``Trainer._load_from_checkpoint`` (``resume_from_checkpoint``) and ``Trainer._load_best_model``
  (``load_best_model_at_end``) copy the checkpoint's adapters into the adapters being trained, in
  place, so the optimizer's state (which Trainer restores itself) stays theirs.

For any other model each of them runs transformers' own code unchanged, and nothing imports
``peft``. :func:`install` applies this when transformers' trainer module is imported, or at
once when it already is; the torch backend calls it when it wraps a model.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import os
import sys
from typing import Any

from peftplug.model.checkpoints import load_checkpoint_adapters
from peftplug.model.peft_model import PeftModel

TRAINER_MODULE = "transformers.trainer"


def install() -> None:
    """Extend ``transformers.Trainer`` for peftplug models now if its module is imported, else as
    soon as it is. Idempotent."""
    module = sys.modules.get(TRAINER_MODULE)
    if module is not None and hasattr(module, "Trainer"):
        _extend(module)
    elif not any(isinstance(finder, _ExtendOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ExtendOnImport())


class _ExtendOnImport(importlib.abc.MetaPathFinder):
    """Finds ``transformers.trainer`` as the path finder does, and extends it once executed."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != TRAINER_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            _extend(module)

        spec.loader.exec_module = exec_module
        return spec


def _extend(module: Any) -> None:
    trainer = module.Trainer
    if getattr(trainer, "_peftplug_extended", False):
        return
    is_hf_peft_model = module._is_peft_model

    def _is_peft_model(model: Any) -> bool:
        return isinstance(model, PeftModel) or is_hf_peft_model(model)

    module._is_peft_model = _is_peft_model
    trainer._save = _for_peftplug_models(trainer._save, _save, lambda self, *a, **k: self.model)
    trainer._load_from_checkpoint = _for_peftplug_models(
        trainer._load_from_checkpoint, _load_from_checkpoint, lambda self, checkpoint, model=None: model or self.model
    )
    trainer._load_best_model = _for_peftplug_models(trainer._load_best_model, _load_best_model, lambda self: self.model)
    trainer._peftplug_extended = True


def _for_peftplug_models(original: Any, replacement: Any, model_of: Any) -> Any:
    """``original`` for any model but a peftplug one, for which ``replacement(self, peft_model, ...)``."""

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        model = self.accelerator.unwrap_model(model_of(self, *args, **kwargs))
        if not isinstance(model, PeftModel):
            return original(self, *args, **kwargs)
        return replacement(self, model, *args, **kwargs)

    return method


def _save(trainer: Any, peft_model: PeftModel, output_dir: str | None = None, state_dict: Any = None) -> None:
    """The adapters' files, and what Trainer saves beside any model, into ``output_dir``."""
    import torch
    from transformers.trainer import TRAINING_ARGS_NAME

    if not trainer.args.should_save:  # transformers 5 calls it on every rank
        return
    output_dir = output_dir if output_dir is not None else trainer.args.output_dir
    os.makedirs(output_dir, exist_ok=True)
    # transformers 5 always writes safetensors (its TrainingArguments has no save_safetensors)
    peft_model.save_pretrained(output_dir, safe_serialization=getattr(trainer.args, "save_safetensors", True))
    tokenizer = trainer.processing_class
    if tokenizer is None:
        tokenizer = getattr(trainer.data_collator, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    torch.save(trainer.args, os.path.join(output_dir, TRAINING_ARGS_NAME))


def _load_from_checkpoint(trainer: Any, peft_model: PeftModel, checkpoint: str, model: Any = None) -> None:
    load_checkpoint_adapters(peft_model, checkpoint)


def _load_best_model(trainer: Any, peft_model: PeftModel) -> None:
    load_checkpoint_adapters(peft_model, trainer.state.best_model_checkpoint)
