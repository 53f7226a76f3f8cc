"""A PaddleNLP base for ``peftplug merge`` / ``generate --base``: its ``.pdparams`` read by
peftplug's arrays-only reader, never by Paddle's pickle (which runs a booby-trapped file's
code), with PaddleNLP's own loader's weights, and weights that do not fit named."""

from __future__ import annotations

import contextlib
import io
import json
import pickle

import numpy as np
import pytest

from peftplug.app.cli import main
from peftplug.errors import BackendError, PeftplugError

paddle = pytest.importorskip("paddle")
pytest.importorskip("paddlenlp")


class _Payload:
    """Unpickling this runs ``open(path, "w")``: the proof that a reader ran code from a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def paddle_base(tmp_path, make_paddle_model):
    """A tiny PaddleNLP Llama saved with PaddleNLP's save_pretrained (model_state.pdparams)."""
    model = make_paddle_model("llama")
    directory = tmp_path / "base"
    model.save_pretrained(str(directory))
    return model, directory


def logits(model) -> np.ndarray:
    with paddle.no_grad():
        output = model(paddle.to_tensor([[5, 6, 7, 8]]))
    return (output[0] if isinstance(output, tuple) else output.logits).numpy()


def test_the_base_loads_with_paddlenlps_own_weights(paddle_base):
    from paddlenlp.transformers import AutoModelForCausalLM

    from peftplug.backends.paddle.app_models import load_causal_lm

    model, directory = paddle_base
    ours = load_causal_lm(str(directory))
    ours.eval()
    theirs = AutoModelForCausalLM.from_pretrained(str(directory))
    theirs.eval()
    np.testing.assert_array_equal(logits(ours), logits(theirs))
    np.testing.assert_array_equal(logits(ours), logits(model))


def test_a_booby_trapped_base_runs_nothing_and_is_named(paddle_base, tmp_path):
    from peftplug.backends.paddle.app_models import load_causal_lm

    _, directory = paddle_base
    marker = tmp_path / "ran"
    (directory / "model_state.pdparams").write_bytes(pickle.dumps({"llama.norm.weight": _Payload(str(marker))}))
    with pytest.raises(PeftplugError, match=r"model_state\.pdparams"):
        load_causal_lm(str(directory))
    assert not marker.exists(), "code from the file ran"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["generate", str(tmp_path / "none"), "--base", str(directory), "--prompt", "x"])
    assert code != 0 and not marker.exists()


def test_weights_that_do_not_fit_are_named(paddle_base):
    from peftplug.backends.paddle.app_models import load_causal_lm
    from peftplug.pdparams import pdparams_bytes, read_pdparams

    _, directory = paddle_base
    weights = read_pdparams(directory / "model_state.pdparams")
    del weights["llama.norm.weight"]
    weights["llama.extra.weight"] = np.zeros(2, dtype=np.float32)
    (directory / "model_state.pdparams").write_bytes(pdparams_bytes(weights))
    with pytest.raises(BackendError, match=r"missing: llama\.norm\.weight; unexpected: llama\.extra\.weight"):
        load_causal_lm(str(directory))


def test_an_index_naming_a_shard_outside_the_directory_is_refused(paddle_base):
    from peftplug.backends.paddle.app_models import load_causal_lm

    _, directory = paddle_base
    (directory / "model_state.pdparams").rename(directory / "model_state-00001-of-00001.pdparams")
    index = {"weight_map": {"llama.norm.weight": "../elsewhere.pdparams"}}
    (directory / "model_state.pdparams.index.json").write_text(json.dumps(index))
    with pytest.raises(BackendError, match=r"names shards outside its directory: \['\.\./elsewhere\.pdparams'\]"):
        load_causal_lm(str(directory))
