"""HF PEFT's task classes (``PeftModelForCausalLM``, ...): what ``get_peft_model`` and
``from_pretrained`` return for a config with a ``task_type``, as in HF PEFT.

Each is a :class:`~peftplug.model.peft_model.PeftModel` subclass that adds nothing: a backend's
model is given the class made of the task class and the backend's own class
(:func:`as_task_model`), so ``isinstance(model, peftplug.PeftModelForCausalLM)`` holds on every
backend and the model behaves as the backend's.
"""

from __future__ import annotations

import functools
from typing import Any

from peftplug.model.peft_model import PeftModel


class PeftModelForCausalLM(PeftModel):
    """A peftplug model whose config's ``task_type`` is ``"CAUSAL_LM"``."""


class PeftModelForSeq2SeqLM(PeftModel):
    """A peftplug model whose config's ``task_type`` is ``"SEQ_2_SEQ_LM"``."""


class PeftModelForSequenceClassification(PeftModel):
    """A peftplug model whose config's ``task_type`` is ``"SEQ_CLS"``."""


class PeftModelForTokenClassification(PeftModel):
    """A peftplug model whose config's ``task_type`` is ``"TOKEN_CLS"``."""


class PeftModelForQuestionAnswering(PeftModel):
    """A peftplug model whose config's ``task_type`` is ``"QUESTION_ANS"``."""


class PeftModelForFeatureExtraction(PeftModel):
    """A peftplug model whose config's ``task_type`` is ``"FEATURE_EXTRACTION"``."""


# HF PEFT's MODEL_TYPE_TO_PEFT_MODEL_MAPPING
TASK_MODEL_CLASSES: dict[str, type[PeftModel]] = {
    "SEQ_CLS": PeftModelForSequenceClassification,
    "SEQ_2_SEQ_LM": PeftModelForSeq2SeqLM,
    "CAUSAL_LM": PeftModelForCausalLM,
    "TOKEN_CLS": PeftModelForTokenClassification,
    "QUESTION_ANS": PeftModelForQuestionAnswering,
    "FEATURE_EXTRACTION": PeftModelForFeatureExtraction,
}


def task_class(task_type: str | None, requested: type | None = None) -> type[PeftModel] | None:
    """The task class of ``task_type``; without one, ``requested`` when it is a task class (as
    ``PeftModelForCausalLM.from_pretrained`` of an adapter saved without a task type); else None."""
    if task_type in TASK_MODEL_CLASSES:
        return TASK_MODEL_CLASSES[task_type]
    if requested is not None and requested in TASK_MODEL_CLASSES.values():
        return requested
    return None


def as_task_model(peft_model: Any, task: type[PeftModel] | None) -> Any:
    """``peft_model`` made an instance of ``task`` as well as of its backend's class (its class
    swapped for one deriving from both; nothing else changes). None leaves it as it is."""
    if task is None or isinstance(peft_model, task):
        return peft_model
    peft_model.__class__ = _combined(task, _backend_class(type(peft_model)))
    return peft_model


def _backend_class(cls: type) -> type:
    """The backend's own class under any task class it was combined with before."""
    return getattr(cls, "_backend_class", cls)


@functools.cache
def _combined(task: type[PeftModel], backend_class: type) -> type:
    return type(
        task.__name__,
        (task, backend_class),
        {"__module__": backend_class.__module__, "__doc__": task.__doc__, "_backend_class": backend_class},
    )
