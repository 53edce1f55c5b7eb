"""Each method config validates its own fields; the base ``MethodConfig`` checks only the fields it owns."""
import dataclasses
from typing import Mapping

import pytest

import tenpeft
from tenpeft import MethodConfig
from tenpeft.methods.per_target import KronaConfig, LoraConfig, LorettaRepConfig
from tenpeft.methods.serial import AdapterConfig, LorettaAdpConfig
from tenpeft.methods.shared import LortaConfig, LortaTTConfig, LortaTuckerConfig, SharedFFNConfig
from tenpeft.methods.stack import FactTKConfig, FactTTConfig, LotrConfig, MetaTTConfig, TensLoraConfig
from tenpeft.methods.stacked import NolaConfig, VeraConfig

OWNED = [(LoraConfig, "rank"), (LorettaRepConfig, "rank"), (LorettaRepConfig, "bottleneck"),
         (AdapterConfig, "rank"), (AdapterConfig, "bottleneck"), (LorettaAdpConfig, "rank"),
         (LorettaAdpConfig, "bottleneck"),
         (LortaConfig, "rank"), (LortaTuckerConfig, "rank"), (LortaTTConfig, "rank"), (SharedFFNConfig, "rank"),
         (VeraConfig, "rank"),
         (NolaConfig, "rank"), (NolaConfig, "num_bases"), (KronaConfig, "rank"),
         (LotrConfig, "rank"), (FactTTConfig, "rank"), (FactTKConfig, "rank"), (MetaTTConfig, "rank"),
         (TensLoraConfig, "rank")]


@pytest.mark.parametrize("config, name", OWNED, ids=lambda v: getattr(v, "__name__", v))
@pytest.mark.parametrize("value", [0, -3])
def test_a_config_checks_the_fields_it_owns(config, name, value):
    with pytest.raises(tenpeft.TenpeftError, match=f"^{name} must be an int >= 1, got {value}$"):
        config(**{name: value})


@pytest.mark.parametrize("config", [LorettaRepConfig, AdapterConfig, LorettaAdpConfig])
def test_shapes_must_be_a_mapping(config):
    with pytest.raises(tenpeft.TenpeftError, match=r"shapes must map 'ROWSxCOLS' to a list of ints, got \[8, 8\]"):
        config(shapes=[8, 8])


def test_every_built_in_config_with_such_a_field_is_listed():
    fields = {(m.config, f.name) for m in tenpeft.METHODS.values() for f in dataclasses.fields(m.config)
              if f.name in ("rank", "bottleneck", "num_bases")}
    assert fields <= set(OWNED)


def test_the_base_checks_its_own_fields():
    with pytest.raises(tenpeft.TenpeftError, match="head_rank must be an int >= 1, got 0"):
        MethodConfig(head_rank=0)
    with pytest.raises(tenpeft.TenpeftError, match="head='big'"):
        MethodConfig(head="big")


@dataclasses.dataclass
class AutoConfig(MethodConfig):
    """A user config whose fields share names with built-in ones but mean something else."""

    rank: int = 0  # 0: choose the rank automatically
    bottleneck: int = -1  # -1: no bottleneck
    num_bases: int = 0  # 0: one basis per layer
    shapes: tuple = (8, 8)  # one shape for every matrix


def test_the_base_does_not_validate_its_subclasses_fields():
    config = AutoConfig()
    assert (config.rank, config.bottleneck, config.num_bases, config.shapes) == (0, -1, 0, (8, 8))
    assert not isinstance(config.shapes, Mapping)


def test_a_user_config_may_reuse_the_shared_check():
    from tenpeft.methods.base import check_positive

    @dataclasses.dataclass
    class Checked(MethodConfig):
        rank: int = 4

        def __post_init__(self):
            super().__post_init__()
            check_positive(self, "rank")

    assert Checked().rank == 4
    with pytest.raises(tenpeft.TenpeftError, match="rank must be an int >= 1, got 0"):
        Checked(rank=0)
