"""save_pretrained writes HF PEFT's model card."""

from __future__ import annotations

import pytest

import peftplug
from peftplug.errors import PeftplugError

LORA = dict(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


def test_the_model_card_is_hf_peft_s(make_model, tmp_path):
    """The card's metadata is what HF PEFT writes for the same base and adapter (read back by
    huggingface_hub's ModelCard), and the text has the framework versions section."""
    hub = pytest.importorskip("huggingface_hub")
    peft = pytest.importorskip("peft")

    base_dir = tmp_path / "base"
    make_model("llama").save_pretrained(base_dir)  # a local name: HF PEFT looks nothing up online

    def named(model):
        model.name_or_path = model.config._name_or_path = str(base_dir)
        return model

    ours = peftplug.get_peft_model(named(make_model("llama")), peftplug.LoraConfig(**LORA))
    ours.save_pretrained(tmp_path / "ours")
    theirs = peft.get_peft_model(named(make_model("llama")), peft.LoraConfig(**LORA))
    theirs.save_pretrained(tmp_path / "theirs")
    card = hub.ModelCard.load(tmp_path / "ours" / "README.md")
    assert card.data.to_dict() == hub.ModelCard.load(tmp_path / "theirs" / "README.md").data.to_dict()
    assert card.data.library_name == "peft" and card.data.base_model == str(base_dir)
    assert "lora" in card.data.tags and "transformers" in card.data.tags
    assert f"### Framework versions\n\n- peftplug {peftplug.__version__}" in card.text


def test_an_existing_card_is_updated_not_replaced(make_model, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    (tmp_path / "README.md").write_text(
        "---\nlicense: mit\ntags:\n- my-tag\n---\n\n# My adapter\n\nTrained on my notes.\n\n"
        "### Framework versions\n\n- PyTorch 2.5\n"
    )
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(**LORA))
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    text = (tmp_path / "README.md").read_text()
    card = hub.ModelCard.load(tmp_path / "README.md")
    assert card.data.license == "mit" and card.data.library_name == "peft"
    assert {"my-tag", "lora", "transformers"} <= set(card.data.tags)
    assert "# My adapter\n\nTrained on my notes." in card.text
    assert text.count(f"- peftplug {peftplug.__version__}") == 1
    assert f"### Framework versions\n\n- peftplug {peftplug.__version__}\n- PyTorch 2.5" in text


def test_no_card_for_other_formats_and_a_broken_card_stops_the_save_before_writing(make_model, tmp_path):
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(**LORA))
    model.save_pretrained(tmp_path / "paddlenlp", format="paddlenlp")
    written = sorted(p.name for p in (tmp_path / "paddlenlp").iterdir())
    assert written == ["lora_config.json", "lora_model_state.pdparams"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "README.md").write_text("---\nlicense: [mit\n---\ntext\n")
    with pytest.raises(PeftplugError, match="README.md: the metadata block is not valid YAML"):
        model.save_pretrained(broken)
    assert sorted(p.name for p in broken.iterdir()) == ["README.md"]
