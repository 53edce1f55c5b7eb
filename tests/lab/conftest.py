"""Fixtures shared by the lab's data tests."""
from __future__ import annotations

import datasets
import pytest

from glue_data import write_glue


@pytest.fixture
def isolated_data(monkeypatch, tmp_path_factory):
    """Keep datasets' Arrow cache out of ~/.cache and ignore a TENPEFT_DATA_DIR set by the caller."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf_cache")
    monkeypatch.delenv("TENPEFT_DATA_DIR", raising=False)


@pytest.fixture(scope="session")
def glue(tmp_path_factory):
    """One tiny GLUE folder (sst2, mrpc, rte, stsb; 24 rows a split) for the lab tests that only read it."""
    return write_glue(tmp_path_factory.mktemp("glue"), tasks=("sst2", "mrpc", "rte", "stsb"))
