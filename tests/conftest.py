"""Shared fixtures: tiny transformers models built from configs (random weights, no hub)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")

# What test modules share is imported by name from any folder of the suite: helpers from
# tests/support (a test module never imports another), the SSF method package from tests/fixtures.
for _folder in ("support", "fixtures"):
    _path = str(Path(__file__).resolve().parent / _folder)
    if _path not in sys.path:
        sys.path.insert(0, _path)

# The plugin-author kit's fixtures (peftplug_manager, peftplug_backend, tiny models) and its
# drivers are the suite's own: the built-ins are tested with what a third party gets.
pytest_plugins = ["peftplug.testing"]

CONTRACT_FIRST = Path(__file__).resolve().parent / "contract"


def pytest_collection_modifyitems(items):
    """The method contract (tests/contract) runs first: when a method breaks it, that is the first
    failure read."""
    items.sort(key=lambda item: CONTRACT_FIRST not in item.path.parents)


@pytest.fixture(autouse=True)
def _fresh_plugin_manager():
    """Each test sees plugins and environment variables as they are when it runs."""
    from peftplug.manager import reset_plugin_manager

    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture(scope="session")
def torch():
    """torch, on one thread: the test models are tiny, and on shared cores more threads only
    add synchronisation (a small linear layer ran ~30x slower on two)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def _build(torch, family: str):
    import transformers

    if family in ("llama", "gpt2"):
        from peftplug.testing import get_driver

        return get_driver("torch").tiny_model(family)
    torch.manual_seed(0)
    if family == "t5":
        config = transformers.T5Config(
            vocab_size=128,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
        )
        return transformers.T5ForConditionalGeneration(config)
    if family == "bert":
        config = transformers.BertConfig(
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            num_labels=3,
        )
        return transformers.BertForSequenceClassification(config)
    raise ValueError(family)


@pytest.fixture
def make_model(torch):
    """``make_model("llama" | "gpt2" | "t5" | "bert")``: the same tiny model each call (seed 0)."""
    return lambda family: _build(torch, family).eval()


@pytest.fixture(scope="session")
def paddle():
    """paddle, on one thread (the test models are tiny; see the ``torch`` fixture)."""
    paddle = pytest.importorskip("paddle")
    pytest.importorskip("paddlenlp")
    paddle.base.core.set_num_threads(1)
    return paddle


def _build_paddle(paddle, family: str):
    from paddlenlp import transformers

    if family == "llama":
        from peftplug.testing import get_driver

        return get_driver("paddle").tiny_model("llama")
    paddle.seed(0)
    if family == "bloom":
        config = transformers.BloomConfig(
            vocab_size=128,
            hidden_size=32,
            n_layer=2,
            n_head=4,
            tie_word_embeddings=False,
        )
        return transformers.BloomForCausalLM(config)
    raise ValueError(family)


@pytest.fixture
def make_paddle_model(paddle):
    """``make_paddle_model("llama" | "bloom")``: the same tiny PaddleNLP causal LM each call
    (seed 0, untied embeddings), in eval mode."""

    def make(family: str):
        model = _build_paddle(paddle, family)
        model.eval()
        return model

    return make
