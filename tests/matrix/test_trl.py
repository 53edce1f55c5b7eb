"""trl with tenpeft models: SFT with adapter-only checkpoints, and DPO with a tenpeft policy and no second copy of the base (issue 14 item 3, issue 13 item 2): the
reference log-probs are trl's precomputed ones (train and eval rows), computed under
``tenpeft.disable_adapter`` while the trainer is built, so they are the base model's even when the adapter
already holds a trained state."""
import copy
import os

import pytest
import torch

import tenpeft
from helpers import perturbed
from models import tiny_model, word_tokenizer
from tenpeft.state import CONFIG_NAME, WEIGHTS_NAME

trl = pytest.importorskip("trl")
PROMPTS = ["is the sky blue ", "is fire cold ", "do fish swim ", "can stones fly "] * 2  # end on a word boundary
CHOSEN, REJECTED = ["yes it is"] * 8, ["no never ever"] * 8


def _data(tag: str):
    """The preference rows; ``tag`` gives each copy its own datasets fingerprint (trl caches by it)."""
    import datasets

    rows = datasets.Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED})
    return rows.map(lambda row: row, new_fingerprint=f"tenpeft-dpo-{tag}")


def _trainer(model, tag: str, tmp_path, ref_model=None, max_steps: int = 2):
    args = trl.DPOConfig(output_dir=str(tmp_path / tag), per_device_train_batch_size=4, max_steps=max_steps,
                         learning_rate=5e-2, report_to=[], use_cpu=True, precompute_ref_log_probs=True,
                         logging_steps=1, disable_tqdm=True, save_strategy="no", max_length=16, seed=0)
    tokenizer = word_tokenizer(PROMPTS + CHOSEN + REJECTED, model.config.vocab_size)
    return trl.DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=_data(tag),
                          eval_dataset=_data(f"{tag}-eval"), processing_class=tokenizer)


def _reference(trainer) -> torch.Tensor:
    rows = trainer.train_dataset
    return torch.tensor([rows["ref_chosen_logps"], rows["ref_rejected_logps"]])


def test_dpo_reference_is_the_base_with_the_adapter_disabled(tmp_path):
    base = tiny_model("llama")
    separate = _trainer(copy.deepcopy(base), "separate-base", tmp_path, ref_model=copy.deepcopy(base))
    policy = perturbed(tenpeft.inject(base, "lora"), std=0.5)  # an adapter that already moved the model
    with tenpeft.disable_adapter(policy):
        trainer = _trainer(policy, "disabled", tmp_path)
    assert trainer.ref_model is None  # no second model is held
    assert torch.allclose(_reference(trainer), _reference(separate), atol=1e-5), (_reference(trainer),
                                                                                 _reference(separate))
    enabled = _trainer(policy, "enabled", tmp_path)  # the same without disabling: the adapter's log-probs
    assert not torch.allclose(_reference(enabled), _reference(separate), atol=1e-3)

    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(p, before[n]) for n, p in policy.named_parameters() if p.requires_grad)
    metrics = trainer.evaluate()  # held-out rows: their reference log-probs were precomputed disabled too
    assert {"eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"} <= set(metrics), sorted(metrics)


def test_sft_trains_the_adapter_and_checkpoints_hold_it_alone(tmp_path):
    import datasets

    model = tenpeft.inject(tiny_model("llama"), "lorta")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    texts = [p + c for p, c in zip(PROMPTS, CHOSEN)]
    args = trl.SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, learning_rate=5e-2,
                         report_to=[], use_cpu=True, save_strategy="steps", save_steps=2, disable_tqdm=True,
                         max_length=16, seed=0)
    trainer = tenpeft.adapter_checkpoints(trl.SFTTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_dict({"text": texts}),
        processing_class=word_tokenizer(texts, model.config.vocab_size)))
    trainer.train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n, p in model.named_parameters() if p.requires_grad} and changed
    saved = set(os.listdir(tmp_path / "checkpoint-2"))
    assert {CONFIG_NAME, WEIGHTS_NAME} <= saved and not {"model.safetensors", "pytorch_model.bin"} & saved
