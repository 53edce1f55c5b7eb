"""Fixtures shared by the lab's data tests."""
from __future__ import annotations

import datasets
import pytest


@pytest.fixture
def isolated_data(monkeypatch, tmp_path_factory):
    """Keep datasets' Arrow cache out of ~/.cache and ignore a TENPEFT_DATA_DIR set by the caller."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf_cache")
    monkeypatch.delenv("TENPEFT_DATA_DIR", raising=False)
