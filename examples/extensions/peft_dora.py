"""A new external baseline in one file: PEFT's DoRA (LoRA with weight decomposition), r 8, alpha 16.

Any PEFT method already runs by name (``--methods peft:loha``, PEFT's defaults); a named baseline
fixes other defaults and gives the study a rank argument. One record says everything the lab needs.

    python studies/rank_ablation.py --import peft_dora --methods peft_dora,peft_lora --ranks 2,8 ...
"""
from tenpeft.lab.baselines import Baseline, register_baseline

register_baseline(Baseline("peft_dora", "lora", {"r": 8, "lora_alpha": 16, "use_dora": True}, rank_arg="r"))
