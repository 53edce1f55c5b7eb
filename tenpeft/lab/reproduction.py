"""The papers' trainable-parameter counts next to tenpeft's: every row as data (``ROWS``), each
measured with ``tenpeft.parameter_report`` on the meta device (no weights), and the markdown of
``docs/reproduction.md`` (``python studies/reproduction.py``).

A count *matches* when it prints as the paper's value at the paper's precision, rounding half up
(``"0.10M"``: 95,000 <= n < 105,000); otherwise a row's ``expect`` is the difference so printed.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Mapping, Union

import transformers

import tenpeft
from tenpeft.presets import PRESETS, build_on_meta, preset_config

COMMAND = "python studies/reproduction.py"
QKVO = ("q", "k", "v", "o")
MODELS: dict[str, str] = {  # the papers' model -> its tenpeft preset (tenpeft.presets.PRESETS)
    "DeBERTa-base": "deberta-base", "RoBERTa-base": "roberta-base", "RoBERTa-large": "roberta-large",
    "LLaMA-2-7B": "llama-2-7b", "LLaMA-2-70B": "llama-2-70b"}
_SKIP = {  # hyperparameters that change no count
    "seed", "adapter_dtype", "alpha", "scale", "init", "zero_factor", "d_init", "activation"}
_REPORTS: dict[str, tenpeft.ParameterReport] = {}


def model_config(name: str):
    """A fresh transformers config of the model ``name`` (a key of ``MODELS``)."""
    return preset_config(MODELS[name])


def model_type(name: str) -> str | None:
    """``config.model_type`` of the model ``name`` (None for a row without a model)."""
    return getattr(transformers, PRESETS[MODELS[name]][0]).model_type if name in MODELS else None


@dataclass(frozen=True)
class Setting:
    """``tenpeft.inject(model, method, **args)`` on the model ``model`` built on the meta device
    (encoders as 2-label sequence classifiers, LLaMA as a causal LM)."""

    model: str
    method: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def report(self) -> tenpeft.ParameterReport:
        key = repr(self)
        if key not in _REPORTS:
            _REPORTS[key] = tenpeft.parameter_report(
                tenpeft.inject(build_on_meta(model_config(self.model)), self.method, **self.args))
        return _REPORTS[key]

    def resolved(self) -> str:
        """The method's count-relevant hyperparameters, the row's and the defaults, as ``k=v``."""
        config = dataclasses.asdict(tenpeft.get_method(self.method).config(**self.args))
        skip = _SKIP | ({"head_rank"} if config.get("head") != "tt" else set())
        return ", ".join(f"{k}={_plain(v)}" for k, v in config.items() if v is not None and k not in skip)


def _plain(value) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_plain(v) for v in value) + ")"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: [{', '.join(map(str, v))}]" for k, v in value.items()) + "}"
    return str(value)


@dataclass(frozen=True)
class Trainable:
    """tenpeft's trainable count of ``setting`` (only the sum of ``components`` when given)."""

    setting: Setting
    components: tuple[str, ...] | None = None

    @property
    def model(self) -> str:
        return self.setting.model

    def breakdown(self) -> dict[str, int]:
        return {k: v for k, v in self.setting.report().components.items()
                if v and (self.components is None or k in self.components)}

    def value(self) -> int:
        return sum(self.breakdown().values())

    def describe(self) -> str:
        args = ", ".join(f"{k}={_plain(v)}" for k, v in self.setting.args.items()) or "defaults"
        only = f"; only {' + '.join(self.components)}" if self.components else ""
        return f"`{self.setting.method}` {args}{only}"


def matched_rank_counts(config, rank: int, lorta_rank: int | None = None) -> dict[str, float]:
    """LoRA at ``rank`` on Q, K, V, O against LoRTA at CP rank ``lorta_rank``, both injected on the
    meta device with the head frozen. ``lorta_rank=None`` is the LoRTA paper's matched tensor rank
    ``R = rank x layers x 4``: LoRA's updates stacked as one tensor have R rank-one terms (``rank``
    per matrix). ``saving``: percent fewer parameters of LoRTA than LoRA."""
    layers = tenpeft.discover(build_on_meta(config)).num_layers
    r_lorta = lorta_rank or rank * layers * len(QKVO)
    count = lambda method, r: tenpeft.parameter_report(tenpeft.inject(  # noqa: E731
        build_on_meta(config), method, rank=r, roles=QKVO, head="frozen")).trainable
    lora, lorta = count("lora", rank), count("lorta", r_lorta)
    return {"lora": lora, "lorta": lorta, "lorta_rank": r_lorta, "layers": layers, "saving": 100 * (1 - lorta / lora)}


@dataclass(frozen=True)
class Saving:
    """Percent fewer trainable parameters of LoRTA than LoRA on ``model`` (``matched_rank_counts``)."""

    model: str
    rank: int
    lorta_rank: int | None = None

    def value(self) -> float:
        return matched_rank_counts(model_config(self.model), self.rank, self.lorta_rank)["saving"]

    def describe(self) -> str:
        c = matched_rank_counts(model_config(self.model), self.rank, self.lorta_rank)
        how = f"R = r x L x 4 = {self.rank} x {c['layers']} x 4" if self.lorta_rank is None else "R given"
        return (f"1 - `lorta` rank={c['lorta_rank']} ({c['lorta']:,}) / `lora` rank={self.rank}, roles=(q, k, v, o) "
                f"({c['lora']:,}); {how}")


@dataclass(frozen=True)
class TensorCount:
    """Parameters of one tensor of ``shape`` at uniform rank ``rank``: tenpeft's TT count
    (boundary ranks 1), or with ``ring`` a tensor ring (every bond ``rank``, the boundary too)."""

    shape: tuple[int, ...]
    rank: int
    ring: bool = False
    model = "—"

    def value(self) -> int:
        if self.ring:
            return sum(self.rank * n * self.rank for n in self.shape)
        tt = tenpeft.get_format("tt")
        return tt.count(self.shape, tt.resolve_rank(self.shape, self.rank))

    def describe(self) -> str:
        kind = "tensor ring" if self.ring else "TT"
        return f"{kind} {list(self.shape)} (product {math.prod(self.shape):,}) at rank {self.rank}"


Measure = Union[Trainable, Saving, TensorCount]


@dataclass(frozen=True)
class Official:
    """The official ``loretta`` package's trainable count for the row's model, measured with its
    ``get_peft_model`` on the meta device (``adapter`` ``adp`` or ``rep``; the README's settings:
    bottleneck 64 / 8, ``tensor_rank``); tests/lab/test_reproduction.py re-measures it."""

    count: int
    adapter: str
    tensor_rank: int = 5


@dataclass(frozen=True)
class PaperCount:
    """One printed count of a paper, how tenpeft measures it, and what the test expects:
    ``expect`` is ``"match"`` or tenpeft's difference at the paper's precision (e.g. ``"+0.02M"``)."""

    name: str
    paper: str
    paper_value: str
    measure: Measure
    expect: str = "match"
    official: Official | None = None
    alternatives: tuple[tuple[str, Measure], ...] = ()
    note: str = ""


def _parse(printed: str) -> tuple[Decimal, str, int, bool]:
    unit = printed[-1] if printed[-1] in "MK%" else ""
    number = Decimal((printed[:-1] if unit else printed).replace(",", ""))
    return number, unit, max(0, -number.as_tuple().exponent), "," in printed


_SCALE = {"M": 10 ** 6, "K": 10 ** 3, "%": 1, "": 1}


def as_printed(value: float, like: str) -> str:
    """``value`` printed the way ``like`` is: its unit and decimals, rounded half up."""
    _, unit, decimals, commas = _parse(like)
    q = (Decimal(str(value)) / _SCALE[unit]).quantize(Decimal(1).scaleb(-decimals), ROUND_HALF_UP)
    return (f"{q:,}" if commas else f"{q}") + unit


def status(value: float, paper_value: str) -> str:
    """``"match"`` when ``value`` prints as ``paper_value``, else the signed difference so printed."""
    mine, paper = _parse(as_printed(value, paper_value)), _parse(paper_value)
    diff = mine[0] - paper[0]
    return "match" if diff == 0 else (f"{diff:+,}" if paper[3] else f"{diff:+}") + paper[1]


def band(paper_value: str) -> str:
    """The counts (or percentages) that print as ``paper_value``."""
    number, unit, decimals, _ = _parse(paper_value)
    if not unit and not decimals:
        return f"n = {number:,}"
    half, scale = Decimal(5).scaleb(-decimals - 1), _SCALE[unit]
    return f"{_fmt((number - half) * scale)} ≤ {'p' if unit == '%' else 'n'} < {_fmt((number + half) * scale)}"


def _fmt(x: Decimal) -> str:
    return f"{int(x):,}" if x == x.to_integral_value() else f"{x.normalize():,}"


def printing_sums(measure: Trainable, paper_value: str) -> list[str]:
    """The sums of the measure's components (every non-empty subset) that print as ``paper_value``."""
    parts = measure.breakdown()
    return [" + ".join(names) for k in range(1, len(parts) + 1) for names in itertools.combinations(parts, k)
            if as_printed(sum(parts[n] for n in names), paper_value) == paper_value]


def _t(model: str, method: str, components: tuple[str, ...] | None = None, **args) -> Trainable:
    return Trainable(Setting(model, method, args), components)


_LORETTA, _LLAMA, _TEXT = "LoRETTA T1/T11", "LoRETTA (LLaMA-2 results)", "LoRETTA (method text)"
_ADP = ("Official placement (after `attention.output.dense` and `output.dense`), bottleneck 64, TT rank 5, trained "
        "LayerNorms, TT head; the official code also trains the TT head's bias, tenpeft keeps it frozen (stored).")
_HEADLESS = "The adapter only, as the paper counts: the classifier frozen (`head=\"frozen\"`)."
_DENSE_HEAD = "with the classifier trained (`head=\"dense\"`)"
_7B = dict(roles=("q", "o", "ffn_out"), shapes={"4096x64": [16, 16, 16, 4, 4, 4]})
_70B = dict(roles=("q", "o", "ffn_out"), shapes={"8192x64": [4, 16, 16, 16, 8, 4]})
_IN_PROJ = dict(target_modules=["in_proj"], shapes={"2304x8": [8, 8, 8, 4, 9]})
ROWS: tuple[PaperCount, ...] = (
    PaperCount("loretta_adp DeBERTa-base", _LORETTA, "0.10M", _t("DeBERTa-base", "loretta_adp"),
               official=Official(99_194, "adp"), note=_ADP),
    PaperCount("loretta_adp RoBERTa-base", _LORETTA, "0.10M", _t("RoBERTa-base", "loretta_adp"),
               official=Official(99_194, "adp"), note=_ADP),
    PaperCount("loretta_rep DeBERTa-base", _LORETTA, "0.05M", _t("DeBERTa-base", "loretta_rep", **_IN_PROJ),
               official=Official(55_766, "rep"), alternatives=(
                   ("tenpeft's defaults (q, v: slices of in_proj)", _t("DeBERTa-base", "loretta_rep")),
                   ("tenpeft's automatic 2304x8 shape", _t("DeBERTa-base", "loretta_rep", target_modules=["in_proj"])),
                   ("adapters only", _t("DeBERTa-base", "loretta_rep", ("factors",), **_IN_PROJ))),
               note="As the official code: v1's fused `in_proj` (q, k, v of all heads, 2304 x 768) as one matrix "
                    "(its mapping `deberta: in_proj`), its table's shape for 2304 x 8. The official count prints one "
                    "unit above the paper's; tenpeft's, without the head's bias, prints as the paper's (at the band's "
                    "top)."),
    PaperCount("loretta_rep RoBERTa-base", _LORETTA, "0.05M", _t("RoBERTa-base", "loretta_rep"), expect="+0.02M",
               official=Official(69_626, "rep"),
               alternatives=(("adapters only", _t("RoBERTa-base", "loretta_rep", ("factors",))),),
               note="The official defaults (q, v, bottleneck 8, TT rank 5, LayerNorms, TT head). Not matched: neither "
                    "count nor any sum of the components prints as the paper's value (adapters only are too few, with "
                    "the LayerNorms too many). The paper prints the same value for DeBERTa-base (row above), whose "
                    "fused `in_proj` takes one bottleneck per layer instead of two."),
    PaperCount("loretta_adp LLaMA-2-7B", _LLAMA, "0.88M", _t("LLaMA-2-7B", "loretta_adp", **_7B),
               official=Official(610_560, "adp"), alternatives=(
                   ("tenpeft's defaults (o, ffn_out; automatic shape)", _t("LLaMA-2-7B", "loretta_adp")),
                   ("TT rank 8 (large_models/run.py's default since April 2024)",
                    _t("LLaMA-2-7B", "loretta_adp", rank=8, **_7B))),
               note="The official code has three d-wide adapters per layer (mapping `llama: gate_proj, up_proj, "
                    "down_proj`: before gate_proj and up_proj, after down_proj; with biases) and its table's shape for "
                    "4096 x 64. tenpeft's serial adapters only follow an output linear, so three d-wide outputs (q, o, "
                    "ffn_out) give the same count, not the same placement. The paper's value includes the RMSNorms, "
                    "which the official package does not train on LLaMA (its `'Norm' in name` misses "
                    "`input_layernorm`): its count is the `factors` component."),
    PaperCount("loretta_adp LLaMA-2-70B", _LLAMA, "4.79M", _t("LLaMA-2-70B", "loretta_adp", **_70B), expect="-0.80M",
               official=Official(2_672_640, "adp"), alternatives=(
                   ("TT rank 7", _t("LLaMA-2-70B", "loretta_adp", rank=7, **_70B)),
                   ("TT rank 8", _t("LLaMA-2-70B", "loretta_adp", rank=8, **_70B))),
               note="The 7B row's settings with the official table's 8192 x 64 shape. Not matched: the paper's value "
                    "lies between TT ranks 7 and 8 of this setting, so no integer TT rank gives it."),
    PaperCount("TT [8,8,8,8,8,8] rank 5", _TEXT, "1.2K", TensorCount((8,) * 6, 5), expect="-0.3K",
               alternatives=(("as a tensor ring (boundary ranks 5, not 1)", TensorCount((8,) * 6, 5, True)),),
               note="The paper's shape for the 768 x 64 adapter matrix; its product is not that matrix's size (next "
                    "row), and tenpeft refuses it at injection (`TenpeftError`). The paper's value is its tensor-ring "
                    "count."),
    PaperCount("TT 768x64 [8,8,12,8,8] rank 5", _TEXT, "1.2K", TensorCount((8, 8, 12, 8, 8), 5), expect="-0.4K",
               alternatives=(("as a tensor ring", TensorCount((8, 8, 12, 8, 8), 5, True)),),
               note="The real 768 x 64 shape (the official table's, tenpeft's): each map of a 768-wide loretta_adp."),
    PaperCount("lorta RoBERTa-base r=4", "LoRTA T1", "3,440", _t("RoBERTa-base", "lorta", rank=4, head="frozen"),
               note=_HEADLESS),
    PaperCount("lorta RoBERTa-large r=8", "LoRTA T1", "9,056", _t("RoBERTa-large", "lorta", rank=8, head="frozen"),
               note=_HEADLESS),
    PaperCount("vera RoBERTa-base r=1024", "LoRTA T1 (VeRA's)", "0.043M", _t("RoBERTa-base", "vera", rank=1024,
               head="frozen"), alternatives=((_DENSE_HEAD, _t("RoBERTa-base", "vera", rank=1024)),),
               note="VeRA's count: the trained b (out) and d (rank) of each matrix, tenpeft's `factors` and "
                    "`shared_factors`; the frozen random A, B not (seed-regenerable). " + _HEADLESS),
    PaperCount("vera RoBERTa-large r=256", "LoRTA T1 (VeRA's)", "0.061M", _t("RoBERTa-large", "vera", rank=256,
               head="frozen"), alternatives=((_DENSE_HEAD, _t("RoBERTa-large", "vera", rank=256)),),
               note="As the row above."),
    PaperCount("lora RoBERTa-base r=8", "LoRTA T1 (LoRA's)", "0.3M",
               _t("RoBERTa-base", "lora", rank=8, head="frozen"), note="q, v. " + _HEADLESS),
    PaperCount("lora RoBERTa-large r=8", "LoRTA T1 (LoRA's)", "0.8M",
               _t("RoBERTa-large", "lora", rank=8, head="frozen"), note="q, v. " + _HEADLESS),
    PaperCount("lorta vs lora LLaMA-2-7B", "LoRTA (text)", "47.6%", Saving("LLaMA-2-7B", 8), alternatives=(
        ("equal CP rank (R = r)", Saving("LLaMA-2-7B", 8, 8)), ("R = 4r (one layer's rank-one terms)",
                                                               Saving("LLaMA-2-7B", 8, 32)),
        ("matched, LoRA rank 1", Saving("LLaMA-2-7B", 1))),
        note="At the tensor rank of LoRA's updates stacked as one tensor (r rank-one terms in each of the L x 4 "
             "matrices) LoRTA costs R (d + d_H + H + L + 4) against LoRA's R x 2d: a saving of "
             "1 - (d + d_H + H + L + 4) / 2d for every r."),
)


def _number(value: float) -> str:
    return f"{value:.3f}%" if isinstance(value, float) else f"{value:,}"


def _mark(value: float, paper_value: str) -> str:
    return "✓ match" if status(value, paper_value) == "match" else f"✗ {status(value, paper_value)}"


def _details(row: PaperCount) -> list[str]:
    m, value, paper = row.measure, row.measure.value(), row.paper_value
    lines = [f"### {row.name}", "", f"* tenpeft: {m.describe()}", f"* prints as {paper}: {band(paper)}"]
    if isinstance(m, Trainable):
        parts = m.breakdown()
        lines += [f"* hyperparameters (count-relevant, resolved): `{m.setting.resolved()}`",
                  "* counts: " + " + ".join(f"{k} {v:,}" for k, v in parts.items()) + f" = {value:,}",
                  f"* component sums that print as {paper}: {'; '.join(printing_sums(m, paper)) or 'none'}"]
    if row.official:
        o = row.official
        lines.append(f"* official `loretta` package (`Loretta{o.adapter.capitalize()}Config`, tensor_rank "
                     f"{o.tensor_rank}): {o.count:,}, prints as {as_printed(o.count, paper)}; tenpeft − official = "
                     f"{value - o.count:+,}")
    for label, alt in row.alternatives:
        v = alt.value()
        lines.append(f"* {label}: {alt.describe()} → {_number(v)}, prints as {as_printed(v, paper)} "
                     f"({_mark(v, paper)})")
    return lines + ([f"* {row.note}"] if row.note else []) + [""]


_HEADER = f"""# The papers' parameter counts, reproduced

Generated by `{COMMAND}` from the rows in `tenpeft/lab/reproduction.py`; every number
here comes from that command, and `tests/lab/test_reproduction.py` fails when this file differs from what
it renders now. A count is `tenpeft.parameter_report(model).trainable` (or the components named) on the meta
device (no weights), encoders built as 2-label sequence classifiers, LLaMA as causal LMs.

**Rule.** A count matches when it prints as the paper's value at the paper's precision, rounding half up:
"0.10M" is {band("0.10M")}, "3,440" is {band("3,440")}. Otherwise the row shows tenpeft's count printed the
paper's way minus the paper's value.

## Models

| model | config | model_type |
|---|---|---|
"""
_DEBERTA = """
DeBERTa-base is DeBERTa **v1** (`microsoft/deberta-base`, transformers `DebertaConfig`, fused
`attention.self.in_proj`), the one the official LoRETTA code targets by `in_proj`; neither paper names
DeBERTa-v2 (or v3), so no row does.

## Counts

| row | paper | model | paper's value | tenpeft | printed so | status | tenpeft settings |
|---|---|---|---|---|---|---|---|
"""


def render() -> str:
    """The markdown of docs/reproduction.md, every number computed now."""
    lines = [f"| {n} | `{c}({', '.join(f'{k}={v}' for k, v in kw.items())})` | `{model_type(n)}` |"
             for n, (c, kw) in ((n, PRESETS[preset]) for n, preset in MODELS.items())]
    lines.append(_DEBERTA.rstrip("\n"))
    for row in ROWS:
        v, paper = row.measure.value(), row.paper_value
        lines.append(f"| {row.name} | {row.paper} | {row.measure.model} | {paper} | {_number(v)} | "
                     f"{as_printed(v, paper)} | {_mark(v, paper)} | {row.measure.describe()} |")
    lines += ["", "## Rows", ""] + [line for row in ROWS for line in _details(row)]
    return _HEADER + "\n".join(lines).replace("\n\n\n", "\n\n").rstrip() + "\n"
