"""``benchmarks/gpu.sh --dry-run``: every step of the GPU script runs on the CPU (toy sizes) and
writes its result, ``summary.json`` lists every step, and ``benchmarks/report.py`` renders the
results into the GPU section of docs/performance.md; without GPU results that section says so."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import paths

SCRIPT = paths.ROOT / "benchmarks" / "gpu.sh"
sys.path.insert(0, str(paths.ROOT / "benchmarks"))
import report  # noqa: E402

pytestmark = pytest.mark.slow  # one dry run of every step, shared by the tests of this file


def script_steps() -> list[str]:
    return re.search(r"^STEPS=\(([^)]*)\)", SCRIPT.read_text(), re.M).group(1).split()


def script_budgets() -> dict[str, int]:
    block = re.search(r"^declare -A BUDGET=\(([^)]*)\)", SCRIPT.read_text(), re.M).group(1)
    return {k: int(v) for k, v in re.findall(r"\[(\w+)\]=(\d+)", block)}


def dry_run_limit() -> int:
    return int(re.search(r"^DRY_RUN_LIMIT=(\d+)", SCRIPT.read_text(), re.M).group(1))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    env = {**os.environ, "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(paths.ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=1800)
    return out, proc


def test_the_dry_run_runs_every_step(dry_run):
    out, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["failed"] == [] and summary["missing"] == []
    assert [s["step"] for s in summary["steps"]] == script_steps()
    for step in summary["steps"]:
        if step["step"] == "packed_runs" and not (paths.ROOT / "benchmarks" / "packed_runs.py").exists():
            assert step["rc"] is None and step["note"] == "skipped: packed_runs.py absent"
        else:
            assert step["rc"] == 0, (step, (out / "logs" / f"{step['step']}.log").read_text()[-3000:])
            # a dry run is held to DRY_RUN_LIMIT, not to the GPU budget: its speed is the CPU's load
            assert step["seconds"] > 0 and step["limit_s"] == dry_run_limit()
            assert step["budget_s"] == script_budgets()[step["step"]]
    assert summary["budget_s"] == sum(script_budgets().values())


def test_the_dry_run_renders_a_table_row_per_method(dry_run):
    out, _ = dry_run
    section = report.gpu_section(str(out))
    assert section.startswith("**Dry run on the CPU")
    for name, _title in report.GPU_RUNS:
        result = json.loads((out / name).read_text())
        assert result["regime"]["tiny"] is True and result["dtype"] == "bf16"
        assert result["compile"] == name.endswith("_compile.json")
        assert result["methods"] and not [m for m, s in result["methods"].items() if "skipped" in s]
        for method, stats in result["methods"].items():
            assert re.search(rf"^\| {re.escape(method)} \| {stats['impl']} \| {stats['trainable']:,} \|", section, re.M)
    memory = json.loads((out / "llama7b-slice_bf16.json").read_text())["memory"]
    assert memory and all(m["peak_increase_bytes"] > 0 for m in memory.values())
    env = json.loads((out / "env.json").read_text())
    assert env["cuda_available"] is False and f"torch {env['torch']}, CUDA {env['cuda']}" in section


def test_the_budgets_fit_in_ten_minutes_and_match_the_header():
    budgets, text = script_budgets(), SCRIPT.read_text()
    kill_after = int(re.search(r"^KILL_AFTER=(\d+)", text, re.M).group(1))
    assert set(budgets) == set(script_steps())
    assert sum(budgets.values()) + kill_after * len(budgets) <= 600
    for step, seconds in budgets.items():  # the header's budget table says the same
        assert re.search(rf"^#\s+{step}\s+{seconds}\s", text, re.M), step


def test_without_gpu_results_the_section_says_not_measured(tmp_path):
    assert report.gpu_section(str(tmp_path)) == report.NOT_MEASURED
    doc = (paths.ROOT / "docs" / "performance.md").read_text()
    assert report.gpu_section(str(paths.ROOT / "benchmarks" / "measured" / "gpu")) in doc  # the doc is up to date
