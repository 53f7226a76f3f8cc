"""PaddleNLP-style files for every method without a codec of its own (IA3, prompt tuning,
P-tuning, and any third-party method).

PaddleNLP (and paddleformers) have no IA3, prompt tuning or P-tuning, so no file of theirs to
match; peftplug defines one in PaddleNLP's manner, named by the method, so that
``save_pretrained(dir, format="paddlenlp")`` works for every registered method. PaddleNLP itself
cannot read these files; LoRA and prefix tuning, which PaddleNLP has, bring their own codecs
(:attr:`peftplug.registration.Method.codecs`) that write PaddleNLP's own files.

=============  ===============================  ==========================================
method         config                           weights
=============  ===============================  ==========================================
IA3            ``ia3_config.json``              ``ia3_model_state.pdparams``
prompt tuning  ``prompt_tuning_config.json``    ``prompt_tuning_model_state.pdparams``
P-tuning       ``p_tuning_config.json``         ``p_tuning_model_state.pdparams``
any other      ``<method name>_config.json``    ``<method name>_model_state.pdparams``
=============  ===============================  ==========================================

- The config file holds the HF PEFT config dict (``adapter_config.json``'s content, with
  ``peft_type``): these methods have no PaddleNLP fields to map to.
- Keys are the model's own names, as PaddleNLP's LoRA files have them: no ``base_model.model.``
  (``base_model.`` for the prompt methods' ``modules_to_save``) prefix. ``prompt_embeddings``
  keeps its name.
- Matrices are in Paddle's layout, the transpose of HF PEFT's: every 2-D tensor a layer method
  declares (:class:`~peftplug.tensor_roles.TensorRole`) is transposed, so an IA3 vector is
  ``[1, out]`` (scales a layer's output) or ``[in, 1]`` (a feed-forward layer's input) and
  broadcasts against Paddle's ``[..., features]`` activations; 1-D tensors and undeclared ones
  (``modules_to_save`` copies) are kept as they are. The P-tuning MLP's Linear weights
  (``prompt_encoder.mlp_head.N.weight``) are ``[in, out]`` as a Paddle Linear keeps them.
  Embedding tables (``prompt_embeddings``, ``prompt_encoder.embedding.weight``) and LSTM
  weights are the same in both frameworks and kept as they are. P-tuning's encoder weights,
  which HF PEFT drops, are in the same file under ``prompt_encoder.``.
"""

from __future__ import annotations

import re

import numpy as np

from peftplug.errors import AdapterLoadError
from peftplug.registration import Method
from peftplug.tensor_roles import TensorRole, roles_by_suffix, split_suffix

LAYER_PREFIX = "base_model.model."
PROMPT_PREFIX = "base_model."
ENCODER = "prompt_encoder."
_MLP_WEIGHT = re.compile(r"prompt_encoder\.mlp_head\.\d+\.weight")


def tensors_to_paddlenlp(
    method: Method, tensors: dict[str, np.ndarray], extra: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The weights file's ``name -> array`` for a canonical state of ``method``."""
    result = {}
    if method.kind == "layer":
        roles = roles_by_suffix(method.tensors)
        for key, value in tensors.items():
            name = key.removeprefix(LAYER_PREFIX)
            result[name] = _transposed(name, value) if _declared_matrix(name, value, roles) else value
        return result
    for key, value in tensors.items():
        result[key.removeprefix(PROMPT_PREFIX)] = value
    for key, value in extra.items():
        if not key.startswith(ENCODER):
            raise AdapterLoadError(f"extra tensor {key!r} has no place in the paddlenlp format (expected {ENCODER}*)")
        result[key] = _transposed(key, value) if _MLP_WEIGHT.fullmatch(key) else value
    return result


def tensors_from_paddlenlp(
    method: Method, tensors: dict[str, np.ndarray], path: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Canonical ``(tensors, extra_tensors)`` of ``method`` from the weights file's ``name -> array``."""
    result, extra = {}, {}
    if method.kind == "layer":
        roles = roles_by_suffix(method.tensors)
        for name, value in tensors.items():
            result[LAYER_PREFIX + name] = (
                _transposed(name, value, path) if _declared_matrix(name, value, roles) else value
            )
        return result, extra
    for name, value in tensors.items():
        if name.startswith(ENCODER):
            extra[name] = _transposed(name, value, path) if _MLP_WEIGHT.fullmatch(name) else value
        elif name == "prompt_embeddings":
            result[name] = value
        else:
            result[PROMPT_PREFIX + name] = value
    return result, extra


def _declared_matrix(name: str, value: np.ndarray, roles: dict[str, TensorRole]) -> bool:
    """True for a declared tensor of more than one axis (stored transposed by Paddle)."""
    return split_suffix(name, roles)[1] is not None and value.ndim > 1


def _transposed(name: str, value: np.ndarray, path: str | None = None) -> np.ndarray:
    if value.ndim != 2:
        where = f"{path}: " if path else ""
        raise AdapterLoadError(f"{where}tensor {name!r} has shape {tuple(value.shape)}; a 2-D matrix was expected")
    return np.ascontiguousarray(value.T)
