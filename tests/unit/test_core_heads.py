"""The task head and trained norms are one strategy (``tenpeft.heads``), and a method says whether it
trains the norms itself by a declared property, never by its name."""
import ast
import dataclasses
import inspect

import pytest

import tenpeft
from models import tiny_model
from tenpeft import engine
from tenpeft.methods import BuildContext, Method, MethodConfig, Plan
from tenpeft.placements import ParallelUpdate
from tenpeft.structure import norm_modules, task_head


def test_only_full_declares_that_it_trains_the_norms():
    assert {name for name, m in tenpeft.METHODS.items() if m.trains_norms} == {"full"}


def test_the_engine_names_no_method():
    strings = {n.value for n in ast.walk(ast.parse(inspect.getsource(engine))) if isinstance(n, ast.Constant)}
    assert not strings & set(tenpeft.METHODS)


@dataclasses.dataclass
class NormBiasConfig(MethodConfig):
    roles: tuple = ()


def _norm_biases(ctx):
    return Plan(trainable={f"{n}.bias": "norms" for n in ctx.norms})


def _norm_bias_count(ctx):
    return {"norms": sum(ctx.modules[n].bias.numel() for n in ctx.norms)}


@pytest.fixture
def norm_bias_method():
    """A user method that decides about the norms itself: only their biases train."""
    method = tenpeft.register_method(Method("norm_bias", NormBiasConfig, _norm_biases, _norm_bias_count, "base",
                                            uses_targets=False, trains_norms=True))
    yield method
    tenpeft.METHODS.pop(method.name)


def test_a_method_that_trains_norms_itself_gets_no_more_from_train_norms(norm_bias_method):
    model = tenpeft.inject(tiny_model("bert"), "norm_bias", train_norms=True)
    trained = {n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("classifier.")}
    assert trained and all(n.endswith(".bias") for n in trained)
    report = tenpeft.parameter_report(model)
    assert report.matches_formula and report.components["norms"] == 5 * 48


def test_a_renamed_full_behaves_as_full():
    copy = tenpeft.register_method(dataclasses.replace(tenpeft.METHODS["full"], name="full_copy"))
    try:
        reports = [tenpeft.parameter_report(tenpeft.inject(tiny_model("roberta"), m, train_norms=True)).to_dict()
                   for m in ("full", copy.name)]
    finally:
        tenpeft.METHODS.pop(copy.name)
    assert {**reports[0], "method": "x"} == {**reports[1], "method": "x"}


def _context(model, **hyperparameters):
    config = tenpeft.METHODS["lora"].config(**hyperparameters)
    return BuildContext(model, config, tenpeft.discover(model), [], dict(model.named_modules()), task_head(model),
                        norm_modules(model))


def test_the_head_strategy_plans_head_and_norms_on_its_own():
    from tenpeft.heads import add_head_and_norms

    model = tiny_model("roberta")
    ctx = _context(model, head="tt", train_norms=True)
    plan, expected = Plan(), {}
    add_head_and_norms(ctx, plan, expected, trains_norms=False)
    assert list(plan.replacements) == ["classifier.dense"]
    assert isinstance(plan.replacements["classifier.dense"], ParallelUpdate)
    assert plan.stored == ["classifier.dense.weight", "classifier.dense.bias"]
    assert {c for c in plan.trainable.values()} == {"norms", "head"}
    assert expected["norms"] == 5 * 2 * 48
    assert 48 * 3 + 3 < expected["head"] < 48 * 48  # a TT update plus the dense out_proj
    untouched = tiny_model("roberta")
    assert [type(m) for m in model.modules()] == [type(m) for m in untouched.modules()]  # only planned


def test_the_head_strategy_leaves_norms_to_a_method_that_trains_them():
    from tenpeft.heads import add_head_and_norms

    ctx = _context(tiny_model("roberta"), head="frozen", train_norms=True)
    plan, expected = Plan(), {}
    add_head_and_norms(ctx, plan, expected, trains_norms=True)
    assert plan == Plan() and expected == {}
