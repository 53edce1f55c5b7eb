"""GLUE metrics (accuracy, F1, Matthews correlation, Spearman, Pearson) as plain floats."""
from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score, matthews_corrcoef

from tenpeft.errors import TenpeftError
from tenpeft.lab.tasks.kinds import task_kind


def compute_metrics(task, predictions, labels) -> dict[str, float]:
    """Every metric of ``task`` (headline first) for ``predictions`` against ``labels``.

    Classification predictions are class indices, or logits of shape (n, num_labels) that are
    argmaxed; regression predictions are scores, shape (n,) or (n, 1). Torch tensors are accepted.
    Degenerate inputs give 0.0 instead of NaN: Matthews, Spearman and Pearson are 0.0 when predictions
    or labels are constant (no correlation can be measured), F1 is 0.0 when there is no positive class;
    non-finite regression predictions (a diverged run) give NaN correlations rather than an error.
    """
    spec = task_kind(task).task if isinstance(task, str) else task
    preds, gold = _as_array(predictions, "predictions"), _as_array(labels, "labels")
    if spec.is_regression:
        preds = preds.reshape(-1) if preds.ndim == 2 and preds.shape[1] == 1 else preds
    elif preds.ndim == 2:
        if preds.shape[1] != spec.num_labels:
            raise TenpeftError(f"logits for {spec.name!r} need {spec.num_labels} columns, got shape {preds.shape}")
        preds = preds.argmax(axis=1)
    if preds.ndim != 1 or gold.ndim != 1 or len(preds) != len(gold):
        raise TenpeftError(f"predictions {preds.shape} and labels {gold.shape} must be 1-D and of equal length")
    if len(gold) == 0:
        raise TenpeftError("cannot compute metrics on zero examples; evaluate on a non-empty split")
    return {name: float(METRICS[name](preds, gold)) for name in spec.metrics}


def _as_array(values, what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor, without importing torch here
        values = values.detach().float().cpu().numpy() if values.is_floating_point() else values.cpu().numpy()
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise TenpeftError(f"{what} must be numbers, got an array of {array.dtype}")
    return array


def _accuracy(preds: np.ndarray, gold: np.ndarray) -> float:
    return float(np.mean(preds == gold))


def _f1(preds: np.ndarray, gold: np.ndarray) -> float:
    return f1_score(gold, preds, pos_label=1, average="binary", zero_division=0.0)


def _matthews(preds: np.ndarray, gold: np.ndarray) -> float:
    if _constant(preds) or _constant(gold):
        return 0.0
    return matthews_corrcoef(gold, preds)


def _spearman(preds: np.ndarray, gold: np.ndarray) -> float:
    return _correlation(stats.spearmanr, preds, gold)


def _pearson(preds: np.ndarray, gold: np.ndarray) -> float:
    return _correlation(stats.pearsonr, preds, gold)


def _correlation(fn, preds: np.ndarray, gold: np.ndarray) -> float:
    if not (np.all(np.isfinite(preds)) and np.all(np.isfinite(gold))):
        return float("nan")
    return 0.0 if _constant(preds) or _constant(gold) else fn(preds, gold).statistic


def _constant(values: np.ndarray) -> bool:
    return len(values) < 2 or bool(np.all(values == values[0]))


METRICS = {"accuracy": _accuracy, "f1": _f1, "matthews": _matthews, "spearman": _spearman, "pearson": _pearson}
