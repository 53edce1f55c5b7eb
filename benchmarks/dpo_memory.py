"""Peak memory of a trl DPO run on a tenpeft LoRA policy: with a second copy of the base as the reference
model (what trl does for a model it does not know as PEFT), and with no second copy (reference log-probs
precomputed while the trainer is built under ``tenpeft.disable_adapter``).

    python benchmarks/dpo_memory.py            # a random-init LLaMA-style decoder of about 60M parameters

Each variant runs in a fresh process (3 DPO steps, batch 4, 32 tokens) and reports that process's peak
resident set (``ru_maxrss``: the model build included, so the two differ by what the variant holds).
"""
from __future__ import annotations

import argparse
import copy
import resource
import subprocess
import sys

VARIANTS = ("second-base", "disabled-adapter")


def child(variant: str) -> None:
    """Run the DPO steps of ``variant`` and print its peak RSS in MiB."""
    import datasets
    import torch
    import trl
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    import tenpeft

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1536,
                         vocab_size=32000, pad_token_id=0, eos_token_id=2)
    base = LlamaForCausalLM(config)
    words = [f"w{i}" for i in range(200)]
    vocab = {"<pad>": 0, "<unk>": 1, "<eos>": 2} | {w: i + 3 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    text = (lambda i, n: " ".join(words[(i * 7 + j) % 200] for j in range(n)) + " ")
    rows = datasets.Dataset.from_dict({"prompt": [text(i, 12) for i in range(12)],
                                       "chosen": [text(i + 1, 12) for i in range(12)],
                                       "rejected": [text(i + 2, 12) for i in range(12)]})
    second = variant == "second-base"
    ref_model = copy.deepcopy(base) if second else None
    policy = tenpeft.inject(base, "lora")
    args = trl.DPOConfig(output_dir="/tmp/dpo_memory", per_device_train_batch_size=4, max_steps=3, report_to=[],
                         use_cpu=True, precompute_ref_log_probs=not second, save_strategy="no", max_length=32,
                         disable_tqdm=True, logging_steps=1)
    if second:
        trainer = trl.DPOTrainer(model=policy, ref_model=ref_model, args=args, train_dataset=rows,
                                 processing_class=tokenizer)
    else:
        with tenpeft.disable_adapter(policy):
            trainer = trl.DPOTrainer(model=policy, args=args, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    params = sum(p.numel() for p in base.parameters())
    print(f"RESULT {variant}: base {params / 1e6:.1f}M parameters, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=VARIANTS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    for variant in VARIANTS:
        done = subprocess.run([sys.executable, __file__, "--child", variant], capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        print(lines[0][7:] if lines else f"{variant} failed:\n{done.stderr[-2000:]}")


if __name__ == "__main__":
    main()
