"""The Hub (issue 14, item 5): ``from_pretrained(base, "user/repo")`` and ``load_adapter`` read a repo through
``huggingface_hub`` (here from a local cache, since nothing can be downloaded), with the checks of a local
folder; ``push_to_hub`` uploads the adapter files and a model card (the upload is captured, not sent)."""
import shutil

import pytest
import torch

import tenpeft
from helpers import assert_untouched, fingerprint, logits, perturbed
from models import tiny_batch, tiny_model
from tenpeft.state import CONFIG_NAME, WEIGHTS_NAME

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache_repo(cache, repo_id: str, folder) -> None:
    """Lay ``folder``'s files out as the Hugging Face cache holds a downloaded repo at ``main``."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    shutil.copytree(folder, root / "snapshots" / COMMIT)


@pytest.fixture
def hub(tmp_path):
    """A cache holding repo ``me/lora`` (a trained tiny-BERT LoRA adapter); returns (cache, expected logits)."""
    model = perturbed(tenpeft.inject(tiny_model("bert"), "lora"))
    tenpeft.save_adapter(model, tmp_path / "saved")
    _cache_repo(tmp_path / "cache", "me/lora", tmp_path / "saved")
    return tmp_path / "cache", logits(model, tiny_batch(model))


def test_from_pretrained_reads_a_hub_repo(hub):
    cache, expected = hub
    model = tenpeft.from_pretrained(tiny_model("bert"), "me/lora", cache_dir=cache, local_files_only=True)
    assert torch.equal(logits(model, tiny_batch(model)), expected)


def test_load_adapter_reads_a_hub_repo(hub):
    cache, expected = hub
    model = tenpeft.inject(tiny_model("bert"), "lora")
    tenpeft.load_adapter(model, "me/lora", revision="main", cache_dir=cache, local_files_only=True)
    assert torch.equal(logits(model, tiny_batch(model)), expected)


BAD_SOURCES = {
    "not cached, offline": ("me/other", "cannot fetch adapter 'me/other' from the Hub"),
    "neither folder nor repo id": ("./no/such/folder", "neither a local folder nor a Hub repo id"),
}


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_a_source_that_cannot_be_had_is_one_error_and_the_model_untouched(case, hub):
    source, message = BAD_SOURCES[case]
    model = tiny_model("bert")
    before = fingerprint(model)
    with pytest.raises(tenpeft.TenpeftError, match=message):
        tenpeft.from_pretrained(model, source, cache_dir=hub[0], local_files_only=True)
    assert_untouched(model, before)


def test_a_hub_adapter_for_another_base_is_refused(hub):
    model = tiny_model("llama")
    before = fingerprint(model)
    with pytest.raises(tenpeft.TenpeftError, match="saved for another base model"):
        tenpeft.from_pretrained(model, "me/lora", cache_dir=hub[0], local_files_only=True)
    assert_untouched(model, before)


def test_a_hub_repo_holding_a_peft_adapter_points_to_peft(tmp_path):
    model = perturbed(tenpeft.inject(tiny_model("bert"), "lora"))
    tenpeft.to_lora(model, rank=2, directory=str(tmp_path / "peft"))
    _cache_repo(tmp_path / "cache", "me/peft", tmp_path / "peft")
    with pytest.raises(tenpeft.TenpeftError, match="peft.PeftModel.from_pretrained"):
        tenpeft.from_pretrained(tiny_model("bert"), "me/peft", cache_dir=tmp_path / "cache", local_files_only=True)


def test_push_to_hub_uploads_the_adapter_and_a_model_card(tmp_path, monkeypatch):
    from huggingface_hub import HfApi, RepoUrl

    uploads = []

    def create_repo(self, repo_id, **options):
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **options):
        uploads.append((repo_id, options))
        shutil.copytree(folder_path, tmp_path / "uploaded")
        return "commit"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    model = perturbed(tenpeft.inject(tiny_model("bert"), "lorta"))
    assert tenpeft.push_to_hub(model, "me/lorta", commit_message="first") == "commit"
    assert uploads == [("me/lorta", {"revision": None, "create_pr": False, "commit_message": "first"})]
    uploaded = tmp_path / "uploaded"
    assert sorted(p.name for p in uploaded.iterdir()) == sorted(["README.md", CONFIG_NAME, WEIGHTS_NAME])
    card = (uploaded / "README.md").read_text()
    assert "library_name: tenpeft" in card and "- lorta" in card and "tenpeft.from_pretrained(base_model, 'me/lorta')" in card
    reloaded = tenpeft.from_pretrained(tiny_model("bert"), str(uploaded))
    assert torch.equal(logits(reloaded, tiny_batch(reloaded)), logits(model, tiny_batch(model)))
