"""push_to_hub uploads the adapter (not the base model), and save_pretrained writes HF PEFT's
model card. No network: huggingface_hub's repo and upload calls are intercepted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import peftplug
from peftplug.errors import PeftplugError

LORA = dict(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


@pytest.fixture
def hub_calls(monkeypatch):
    """HfApi's create_repo and upload_folder, recorded instead of sent: each call's keywords,
    and for an upload the files of the folder (read while it exists) as {path: bytes}."""
    hub = pytest.importorskip("huggingface_hub")
    calls: dict[str, list] = {"create_repo": [], "upload_folder": []}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append({"repo_id": repo_id, **kwargs})
        return hub.RepoUrl(f"https://huggingface.co/someone/{repo_id.split('/')[-1]}")

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        calls["upload_folder"].append({**kwargs, "files": files})
        return "commit-info"

    monkeypatch.setattr(hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(hub.HfApi, "upload_folder", upload_folder)
    return calls


def test_push_to_hub_uploads_the_adapter_files_and_no_base_weights(make_model, hub_calls, tmp_path):
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(**LORA))
    result = model.push_to_hub(
        "my-lora", commit_message="first adapter", private=True, token="hf_x", revision="dev", create_pr=True
    )
    assert result == "commit-info"
    assert [call["repo_id"] for call in hub_calls["create_repo"]] == ["my-lora"]
    assert hub_calls["create_repo"][0]["private"] is True and hub_calls["create_repo"][0]["token"] == "hf_x"
    (upload,) = hub_calls["upload_folder"]
    assert upload["repo_id"] == "someone/my-lora"
    assert (upload["commit_message"], upload["token"], upload["revision"], upload["create_pr"]) == (
        "first adapter",
        "hf_x",
        "dev",
        True,
    )
    assert sorted(upload["files"]) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    model.save_pretrained(tmp_path)  # the same files save_pretrained writes
    for name, content in upload["files"].items():
        assert content == (tmp_path / name).read_bytes(), name


def test_push_to_hub_follows_save_pretrained_s_adapter_and_format_rules(make_model, hub_calls):
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(**LORA))
    model.add_adapter("other", peftplug.LoraConfig(**LORA))
    model.push_to_hub("org/two")
    model.push_to_hub("org/only-other", selected_adapters=["other"], format="paddlenlp")
    first, second = hub_calls["upload_folder"]
    assert first["commit_message"] == "Upload model"
    assert sorted(first["files"]) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "other/adapter_config.json",
        "other/adapter_model.safetensors",
    ]
    assert sorted(second["files"]) == ["other/lora_config.json", "other/lora_model_state.pdparams"]
    with pytest.raises(PeftplugError, match="no adapter named 'missing'"):
        model.push_to_hub("org/x", selected_adapters=["missing"])
    assert len(hub_calls["create_repo"]) == 2


def test_push_to_hub_without_huggingface_hub_names_the_package(make_model, monkeypatch):
    model = peftplug.get_peft_model(make_model("llama"), peftplug.LoraConfig(**LORA))
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(PeftplugError, match=r"needs the huggingface_hub package.*pip install huggingface_hub"):
        model.push_to_hub("my-lora")


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
