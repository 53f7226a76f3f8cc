"""HF PEFT's ``AutoPeftModel*`` classes: the base model named in the adapter's config, loaded
from its local directory, with the adapter on it.

The base model is loaded by the backend whose model library wrote that directory (its
``model_builder``: transformers for torch, PaddleNLP for Paddle), with the Auto class of the
class's task type, so an ``AutoPeftModelForCausalLM`` on a torch adapter is HF PEFT's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from peftplug.config import CONFIG_NAME, AdapterConfig
from peftplug.errors import ConfigError
from peftplug.manager import get_plugin_manager
from peftplug.model.peft_model import DEFAULT_ADAPTER, PeftModel
from peftplug.model.task_models import TASK_MODEL_CLASSES

# The from_pretrained keywords that also go to the base model's loading, as HF PEFT passes them.
BASE_MODEL_OPTIONS = ("torch_dtype", "device_map", "low_cpu_mem_usage", "revision")
TOKENIZER_CONFIG = "tokenizer_config.json"


class AutoPeftModel:
    """Loads an adapter saved without a ``task_type`` (HF PEFT's ``AutoPeftModel``); the
    ``AutoPeftModelFor...`` subclasses load one of their task type. Use :meth:`from_pretrained`."""

    task_type: ClassVar[str | None] = None

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError(f"{type(self).__name__} is built with {type(self).__name__}.from_pretrained(adapter_dir)")

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        adapter_name: str = DEFAULT_ADAPTER,
        is_trainable: bool = False,
        config: AdapterConfig | None = None,
        **kwargs: Any,
    ) -> PeftModel:
        """The base model of the adapter in ``pretrained_model_name_or_path`` (the local directory
        its ``base_model_name_or_path`` names), loaded with ``torch_dtype`` / ``device_map`` /
        ``low_cpu_mem_usage`` where given, with the adapter loaded on it by
        :meth:`PeftModel.from_pretrained` (the same keywords). When the adapter directory holds a
        tokenizer with more tokens than the base's embeddings, the embeddings are resized first, as
        HF PEFT does. A task type other than the class's, or a base that is no local model
        directory, is an error naming it, before any model is loaded."""
        from peftplug.model.load_options import check_load_options

        check_load_options(f"{cls.__name__}.from_pretrained", kwargs, None)
        directory = Path(pretrained_model_name_or_path)
        saved = AdapterConfig.from_pretrained(directory, subfolder=kwargs.get("subfolder"))
        where = str(directory / (kwargs.get("subfolder") or "") / CONFIG_NAME)
        if saved.task_type != cls.task_type:
            wanted = TASK_MODEL_CLASSES.get(saved.task_type)
            right = f"AutoPeftModelFor{wanted.__name__.removeprefix('PeftModelFor')}" if wanted else "AutoPeftModel"
            raise ConfigError(
                where, "task_type", saved.task_type, f"{cls.task_type!r} for {cls.__name__} (use {right})"
            )
        base_path = saved.base_model_name_or_path
        if not base_path or not Path(base_path).is_dir():
            raise ConfigError(
                where, "base_model_name_or_path", base_path, "a local model directory (peftplug downloads nothing)"
            )
        builder = _builder_for(Path(base_path), where)
        options = {key: kwargs[key] for key in BASE_MODEL_OPTIONS if key in kwargs and key != "revision"}
        base = (
            builder.load(base_path, saved.task_type, **options) if options else builder.load(base_path, saved.task_type)
        )
        if (directory / TOKENIZER_CONFIG).is_file() and hasattr(base, "get_input_embeddings"):
            size = len(builder.load_tokenizer(str(directory)))
            if size > base.get_input_embeddings().weight.shape[0]:
                base.resize_token_embeddings(size)
        return PeftModel.from_pretrained(
            base, directory, adapter_name=adapter_name, is_trainable=is_trainable, config=config, **kwargs
        )


def _builder_for(base_path: Path, where: str) -> Any:
    """The model builder of the backend whose library wrote ``base_path``."""
    manager = get_plugin_manager()
    names = []
    for backend in manager.backends:
        builder = backend.part("model_builder") if backend.model_builder else None
        if builder is not None:
            names.append(builder.library)
            if builder.recognises(base_path):
                return builder
    raise ConfigError(
        where, "base_model_name_or_path", str(base_path), f"a model directory written by one of: {', '.join(names)}"
    )


def _auto_class(task_type: str) -> type[AutoPeftModel]:
    task = TASK_MODEL_CLASSES[task_type]
    name = "AutoPeftModelFor" + task.__name__.removeprefix("PeftModelFor")
    doc = f"Loads an adapter whose ``task_type`` is ``{task_type!r}`` onto its base model (HF PEFT's ``{name}``)."
    return type(name, (AutoPeftModel,), {"task_type": task_type, "__doc__": doc, "__module__": __name__})


AutoPeftModelForCausalLM = _auto_class("CAUSAL_LM")
AutoPeftModelForSeq2SeqLM = _auto_class("SEQ_2_SEQ_LM")
AutoPeftModelForSequenceClassification = _auto_class("SEQ_CLS")
AutoPeftModelForTokenClassification = _auto_class("TOKEN_CLS")
AutoPeftModelForQuestionAnswering = _auto_class("QUESTION_ANS")
AutoPeftModelForFeatureExtraction = _auto_class("FEATURE_EXTRACTION")
