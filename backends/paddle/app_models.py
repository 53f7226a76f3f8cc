"""The PaddlePaddle backend's models for the app (its ``model_builder``): PaddleNLP builds the
tiny Llama of recipes and loads model directories and tokenizers.

A built-in architecture gets the very weights the torch backend's builder draws for the same
seed when that backend's packages are installed (built by transformers and copied with
:func:`peftplug.interop.weights.copy_base_weights`), so the same recipe on either backend starts
from the same model. Importing this module imports neither paddle nor PaddleNLP.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from peftplug.errors import BackendError
from peftplug.weight_index import index_shards

# The tiny shape fields PaddleNLP's LlamaConfig takes under the same names as transformers'.
_LLAMA_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "initializer_range",
)
# The backend whose seeded initialisation the tiny models share.
TWIN_BACKEND = "torch"


class PaddleModels:
    """Models of PaddleNLP (see :class:`peftplug.app.backend_parts.ModelBuilder`); causal
    language models only."""

    library = "paddlenlp"
    tiny_architectures = ("llama",)
    weight_files = ("*.pdparams", "*.safetensors")
    task_types = ("CAUSAL_LM",)

    def recognises(self, directory: Path) -> bool:
        """True for a directory PaddleNLP wrote: ``*.pdparams`` weights, or ``paddlenlp_version``
        in its config.json."""
        if any(Path(directory).glob("*.pdparams")):
            return True
        try:
            config = json.loads((Path(directory) / "config.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and "paddlenlp_version" in config

    def build(self, spec: Any, tokenizer: Any) -> Any:
        """The PaddleNLP base model of ``spec`` in eval mode: the tiny Llama (untied embeddings;
        vocabulary and special tokens from ``tokenizer``) with the torch builder's weights for
        ``spec.seed`` when torch is installed (Paddle's own seeded init otherwise), or the local
        PaddleNLP directory ``spec.path``."""
        import paddle
        from paddlenlp import transformers

        if spec.path is not None:
            paddle.seed(spec.seed)
            model = load_causal_lm(spec.path)
            model.eval()
            return model
        config = transformers.LlamaConfig(
            vocab_size=tokenizer.vocab_size,
            tie_word_embeddings=False,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            use_flash_attention=False,
            use_fused_rms_norm=False,
            use_fused_rope=False,
            **{key: value for key, value in spec.config.items() if key in _LLAMA_FIELDS},
        )
        paddle.seed(spec.seed)
        model = transformers.LlamaForCausalLM(config)
        twin = twin_builder()
        if twin is not None:
            from peftplug.interop.weights import copy_base_weights

            copy_base_weights(twin.build(spec, tokenizer), model, "llama")
        model.eval()
        return model

    def load(self, directory: str, task_type: str | None) -> Any:
        """The directory's causal LM (:func:`load_causal_lm`), in eval mode."""
        model = load_causal_lm(directory)
        model.eval()
        return model

    def load_tokenizer(self, directory: str) -> Any:
        """PaddleNLP's ``AutoTokenizer`` of ``directory``."""
        from paddlenlp.transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(directory)


def twin_builder() -> Any:
    """The model builder of :data:`TWIN_BACKEND` when that backend is registered with one and
    its packages are installed (to share its initialisation), else None."""
    from peftplug.manager import get_plugin_manager

    backends = get_plugin_manager().backends
    if TWIN_BACKEND not in backends.names():
        return None
    twin = backends.get(TWIN_BACKEND)
    if not all(importlib.util.find_spec(name) is not None for name in twin.requires):
        return None
    return twin.part("model_builder")


MODELS = PaddleModels()


PDPARAMS_SINGLE = "model_state.pdparams"
PDPARAMS_INDEX = "model_state.pdparams.index.json"


def load_causal_lm(directory: str) -> Any:
    """PaddleNLP's causal LM of ``directory``, its ``.pdparams`` weights read by peftplug's
    arrays-only reader: PaddleNLP's own loader unpickles them, which runs whatever code a file
    holds. Weights that do not fit the model (missing or unexpected keys, other shapes) are an
    error naming them. A directory without ``.pdparams`` (safetensors) is PaddleNLP's to read."""
    import paddle
    from paddlenlp.transformers import AutoConfig, AutoModelForCausalLM

    files = pdparams_files(Path(directory))
    if not files:
        return AutoModelForCausalLM.from_pretrained(directory)
    from peftplug.pdparams import read_pdparams

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(directory))
    weights: dict[str, Any] = {}
    for path in files:
        weights.update(read_pdparams(path))
    own = model.state_dict()
    missing, unexpected = sorted(own.keys() - weights.keys()), sorted(weights.keys() - own.keys())
    wrong = [
        f"{key} {list(weights[key].shape)} (the model's {own[key].shape})"
        for key in sorted(own.keys() & weights.keys())
        if list(weights[key].shape) != list(own[key].shape)
    ]
    if missing or unexpected or wrong:
        problems = [
            f"{label}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("other shapes", wrong))
            if names
        ]
        raise BackendError(f"the weights in {directory} do not fit its {type(model).__name__}: " + "; ".join(problems))
    model.set_state_dict({key: paddle.to_tensor(value).astype(own[key].dtype) for key, value in weights.items()})
    return model


def pdparams_files(directory: Path) -> list[Path]:
    """The ``.pdparams`` weight files of a PaddleNLP model directory: ``model_state.pdparams``, or
    the shards its index names (file names inside the directory only)."""
    if (directory / PDPARAMS_SINGLE).is_file():
        return [directory / PDPARAMS_SINGLE]
    index = directory / PDPARAMS_INDEX
    if not index.is_file():
        return []
    return index_shards(index, BackendError)[1]
