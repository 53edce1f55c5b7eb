"""docs/reproduction.md: every row of tenpeft/lab/reproduction.py measured now equals its stored
expectation (the paper's value at its precision, or the documented difference), the official
``loretta`` counts the rows cite are what that package gives, and the committed doc is what the
generator renders now (so it cannot go stale)."""
import pytest
import torch

import tenpeft
from tenpeft.lab.reproduction import ROWS, Trainable, model_config, render, status
from tenpeft.presets import build_model, build_on_meta
import paths

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # loretta's cuda autocast on CPU


def _rows(rows):
    return [pytest.param(row, id=row.name) for row in rows]


@pytest.mark.parametrize("row", _rows(ROWS))
def test_row_equals_its_stored_expectation(row):
    assert status(row.measure.value(), row.paper_value) == row.expect
    if isinstance(row.measure, Trainable):
        assert row.measure.setting.report().matches_formula


def _official_count(row) -> int:
    loretta = pytest.importorskip("loretta")
    config, o = model_config(row.measure.model), row.official
    task = "CAUSAL_LM" if config.model_type == "llama" else "SEQ_CLS"
    if o.adapter == "adp":
        peft_config = loretta.LorettaAdpConfig(bottleneck_size=64, non_linearity="relu", adapter_dropout=0.0,
                                               scaling=1.0, bias="none", task_type=task, tensor_rank=o.tensor_rank)
    else:
        peft_config = loretta.LorettaRepConfig(r=8, lora_alpha=16, lora_dropout=0.05, bias="none", task_type=task,
                                               tensor_rank=o.tensor_rank)
    with torch.device("meta"):
        model = loretta.get_peft_model(build_model(config), peft_config)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("row", _rows([r for r in ROWS if r.official]))
def test_official_counts_are_what_the_official_package_gives(row):
    assert _official_count(row) == row.official.count


def test_the_papers_8x8x8x8x8x8_shape_is_refused_for_a_768x64_matrix():
    model = build_on_meta(model_config("RoBERTa-base"))
    with pytest.raises(tenpeft.TenpeftError, match="262144, not 49152"):
        tenpeft.inject(model, "loretta_adp", shapes={"768x64": [8] * 6})


def test_committed_doc_is_what_the_generator_renders_now():
    committed = (paths.ROOT / "docs" / "reproduction.md").read_text(encoding="utf-8")
    assert committed == render(), "docs/reproduction.md is stale: run python studies/reproduction.py"
