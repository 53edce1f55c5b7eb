"""Adapter-only saving wherever transformers saves (issue 14, item 1): ``model.save_pretrained``,
``Trainer.save_model`` and every checkpoint write the tenpeft adapter and not the base; a run resumed
from such a checkpoint (``tenpeft.adapter_checkpoints``) ends bit-identical to the uninterrupted one;
the checkpoint reloads in a fresh process."""
import json
import os
import subprocess
import sys

import pytest
import torch

import tenpeft
from helpers import logits
from models import TinyClassification, tiny_batch, tiny_model
from tenpeft.state import CONFIG_NAME, WEIGHTS_NAME
import paths

TRAINER_FILES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin"}


def _trainer(method: str, output_dir, max_steps: int = 4, **settings):
    from transformers import Trainer, TrainingArguments

    model = tenpeft.inject(tiny_model("bert"), method)
    args = TrainingArguments(output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=4,
                             learning_rate=1e-2, report_to=[], save_strategy="steps", save_steps=2, use_cpu=True,
                             logging_steps=1, disable_tqdm=True, dataloader_num_workers=0, seed=0, **settings)
    rows = TinyClassification(model.config.vocab_size, model.config.num_labels)
    trainer = Trainer(model=model, args=args, train_dataset=rows, eval_dataset=rows)
    return tenpeft.adapter_checkpoints(trainer)


def _adapter(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, (t, _) in tenpeft.state.adapter_tensors(model).items()}


@pytest.mark.parametrize("method", ["lorta", "loretta_adp"])
def test_checkpoints_hold_the_adapter_alone_and_resume_bit_identical(method, tmp_path):
    full = _trainer(method, tmp_path / "full")
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-2"
    assert set(os.listdir(checkpoint)) == {CONFIG_NAME, WEIGHTS_NAME} | TRAINER_FILES
    saved = json.loads((checkpoint / CONFIG_NAME).read_text())
    assert saved["method"] == method and "head" in {t["component"] for t in saved["tensors"].values()}

    resumed = _trainer(method, tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    expected, got = _adapter(full.model), _adapter(resumed.model)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[n], got[n]) for n in expected), \
        max((expected[n] - got[n]).abs().max().item() for n in expected)
    losses = [[e["loss"] for e in t.state.log_history if "loss" in e] for t in (full, resumed)]
    assert losses[1] == losses[0]  # steps 1-2 restored from the checkpoint's state, 3-4 trained again, equal


def test_save_model_writes_the_adapter_and_a_fresh_process_reloads_it(tmp_path):
    trainer = _trainer("lora", tmp_path / "run", max_steps=2)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    assert set(os.listdir(tmp_path / "final")) == {CONFIG_NAME, WEIGHTS_NAME, "training_args.bin"}
    model = trainer.model.eval()
    torch.save(logits(model, tiny_batch(model)), tmp_path / "expected.pt")
    code = ("import sys, torch, tenpeft; from models import TinyClassification, tiny_batch, tiny_model; from helpers import logits\n"
            "model = tenpeft.from_pretrained(tiny_model('bert'), sys.argv[1]).eval()\n"
            "assert torch.equal(logits(model, tiny_batch(model)), torch.load(sys.argv[2])), 'logits differ'\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(paths.TESTS), str(paths.ROOT)]))
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "final"), str(tmp_path / "expected.pt")],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_load_best_model_at_end_restores_the_best_adapter(tmp_path):
    trainer = _trainer("lora", tmp_path / "run", eval_strategy="steps", eval_steps=2, load_best_model_at_end=True,
                       metric_for_best_model="loss", greater_is_better=True)  # keep the worse: a real reload
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best and best.endswith("checkpoint-2") and trainer.state.global_step == 4, best
    reference = tenpeft.from_pretrained(tiny_model("bert"), best)
    assert all(torch.equal(t, _adapter(reference)[n]) for n, t in _adapter(trainer.model).items())


def test_save_pretrained_writes_the_adapter_until_unload(tmp_path):
    model = tenpeft.inject(tiny_model("bert"), "lora")
    model.save_pretrained(tmp_path / "a")
    assert sorted(os.listdir(tmp_path / "a")) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    model.save_pretrained(tmp_path / "b", is_main_process=False)
    assert not (tmp_path / "b").exists()
    with pytest.raises(tenpeft.TenpeftError, match="takes no \\['push_to_hub'\\]"):
        model.save_pretrained(tmp_path / "c", push_to_hub=True)
    plain = tenpeft.merge_and_unload(model)
    assert "save_pretrained" not in vars(plain)
    plain.save_pretrained(tmp_path / "plain")
    assert "model.safetensors" in os.listdir(tmp_path / "plain")


def test_a_gathered_state_dict_supplies_the_saved_values(tmp_path):
    """FSDP and DeepSpeed hand save_pretrained a gathered full state dict: its values are what is saved."""
    model = tenpeft.inject(tiny_model("bert"), "lora")
    state = {n: torch.full_like(t, 0.5) for n, t in _adapter(model).items()}
    model.save_pretrained(tmp_path / "a", state_dict=state)
    loaded = tenpeft.from_pretrained(tiny_model("bert"), str(tmp_path / "a"))
    assert all(torch.equal(t, state[n]) for n, t in _adapter(loaded).items())


def test_adapter_checkpoints_refuses_a_model_without_adapters(tmp_path):
    from transformers import Trainer, TrainingArguments

    trainer = Trainer(model=tiny_model("bert"), args=TrainingArguments(output_dir=str(tmp_path), report_to=[],
                                                                     use_cpu=True))
    with pytest.raises(tenpeft.TenpeftError, match="no tenpeft adapters"):
        tenpeft.adapter_checkpoints(trainer)
