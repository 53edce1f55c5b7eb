#!/usr/bin/env bash
# The GPU measurements of docs/performance.md in one run on a CUDA machine (issue 16, item 3):
#
#     bash benchmarks/gpu.sh [--out DIR]          # on the GPU; DIR defaults to benchmarks/measured/gpu
#     bash benchmarks/gpu.sh --dry-run [--out DIR]  # the same steps on the CPU, smallest settings
#                                                 # (DIR defaults to $TMPDIR/tenpeft-gpu-dry-run)
#     python benchmarks/report.py --doc           # renders benchmarks/measured/gpu/ into docs/performance.md
#
# Steps and their time limits (seconds, each under `timeout`; a step that fails or runs out of time
# is recorded with its exit status, 124 for a timeout, and the later steps still run; a dry run gives
# each step DRY_RUN_LIMIT seconds instead, and its summary still lists the GPU budget). The limits
# are what the whole may take on one H200 (9.8 minutes with the kill grace of each step);
# they were set before any GPU run, so the first run's summary.json says which step needs more:
#
#   step                budget  what
#   env                     15  nvidia-smi, torch / CUDA / cuDNN versions -> env.json, nvidia-smi.txt
#   cuda_tests              50  pytest -m cuda tests/unit -> pytest-cuda.xml (tests/unit/test_cuda.py)
#   throughput_eager        55  train_step.py --regime throughput, bf16, every method, no memory probe
#   throughput_compile     130  the same with --compile, COMPILE_METHODS only, no inference timing
#   latency_eager           55  train_step.py --regime latency, bf16, every method, no memory probe
#   latency_compile        110  the same with --compile, COMPILE_METHODS only, no inference timing
#   llama7b_slice           95  train_step.py --regime llama7b-slice, bf16, with the memory probe
#                               (torch.cuda.max_memory_allocated, one process per method)
#   packed_runs             55  benchmarks/packed_runs.py --k 4 --steps 20 (one pack size: sequential, 4 processes
#                               and the pack are three waves of process launches; recorded as absent if the file is)
#
# Every step writes its output (log) to DIR/logs/STEP.log; DIR/summary.json lists every step
# (step, command, rc, seconds, budget_s, limit_s) and the script exits non-zero if any step failed.
# --dry-run runs the same scripts on the CPU with the smallest settings (bf16, one warm-up round, one
# round of one step, a few methods, toy model sizes (--tiny-model), the compiled runs with the dynamo
# "eager" backend, the CUDA tests only collected), so that the JSON-writing and reporting code paths are checked without a GPU (the suite
# does: tests/unit/test_gpu_script.py). A dry run's numbers mean nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/benchmarks/measured/gpu"
OUT_GIVEN=0
DRY_RUN=0
PYTHON="${PYTHON:-python}"
KILL_AFTER=3  # seconds between timeout's TERM and KILL
# a dry run's time limit per step: the budgets are the GPU's; on a shared 2-core CPU the toy steps take
# 10-60 s and vary with the machine's load, so a dry run checks that each step works, not its speed
DRY_RUN_LIMIT=300

# step -> time limit (seconds); the header above lists the same
declare -A BUDGET=([env]=15 [cuda_tests]=50 [throughput_eager]=55 [throughput_compile]=130 [latency_eager]=55
                   [latency_compile]=110 [llama7b_slice]=95 [packed_runs]=55)
STEPS=(env cuda_tests throughput_eager throughput_compile latency_eager latency_compile llama7b_slice packed_runs)
# each compiled model costs its inductor compile (forward + backward, likely tens of seconds for BERT-base;
# not measured): the pair the targets compare
COMPILE_METHODS="peft_lora,lorta"

usage() { echo "usage: bash benchmarks/gpu.sh [--dry-run] [--out DIR]"; }

parse_args() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dry-run) DRY_RUN=1; shift ;;
            --out) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; OUT="$2"; OUT_GIVEN=1; shift 2 ;;
            -h|--help) usage; exit 0 ;;
            *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
        esac
    done
    if [[ $DRY_RUN == 1 && $OUT_GIVEN == 0 ]]; then  # a dry run's numbers never land in measured/gpu/
        OUT="${TMPDIR:-/tmp}/tenpeft-gpu-dry-run"
    fi
    mkdir -p "$OUT/logs"
    OUT="$(cd "$OUT" && pwd)"
}

# run_step NAME COMMAND...: run under its time limit, log to logs/NAME.log, append a line to steps.tsv
run_step() {
    local name="$1"; shift
    local budget="${BUDGET[$name]}" limit start end rc=0
    limit=$(if [[ $DRY_RUN == 1 ]]; then echo "$DRY_RUN_LIMIT"; else echo "$budget"; fi)
    echo "== $name (limit ${limit} s): $*"
    start=$(date +%s.%N)
    timeout -k "$KILL_AFTER" "$limit" "$@" >"$OUT/logs/$name.log" 2>&1 || rc=$?
    end=$(date +%s.%N)
    echo "   rc $rc, $(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}') s"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$start" "$end" "$budget" "$limit" "$*" >>"$OUT/steps.tsv"
}

# skip_step NAME REASON: a step that could not run (recorded with rc "skipped")
skip_step() {
    echo "== $1: skipped ($2)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "skipped" "" "" "${BUDGET[$1]}" "" "$2" >>"$OUT/steps.tsv"
}

# train_args REGIME eager|compile: train_step.py's flags (device, dtype, sizes, methods) for this run
train_args() {
    if [[ $DRY_RUN == 1 ]]; then
        echo --device cpu --dtype bf16 --tiny-model --warmup 1 --rounds 1 --steps 1 --methods "$(dry_methods "$@")"
    else
        echo --device cuda --dtype bf16
        if [[ $2 == compile ]]; then echo --methods "$COMPILE_METHODS"; fi
    fi
    if [[ $2 == compile ]]; then
        echo --compile --no-inference
        if [[ $DRY_RUN == 1 ]]; then echo --compile-backend eager; fi
    fi
}

# dry_methods REGIME eager|compile: the few methods of a dry run
dry_methods() {
    if [[ $1 == llama7b-slice ]]; then echo floor,peft_lora_qkvo,lorta  # the memory targets' three
    elif [[ $2 == compile ]]; then echo floor,lorta
    else echo floor,peft_lora,lorta
    fi
}

main() {
    parse_args "$@"
    cd "$ROOT"
    : >"$OUT/steps.tsv"
    local ts="$ROOT/benchmarks/train_step.py"
    run_step env "$PYTHON" "$ROOT/benchmarks/gpu_run.py" env "$OUT" $(if [[ $DRY_RUN == 0 ]]; then echo --require-cuda; fi)
    if [[ $DRY_RUN == 1 ]]; then
        run_step cuda_tests "$PYTHON" -m pytest --collect-only -q -m cuda tests/unit --junitxml="$OUT/pytest-cuda.xml"
    else
        run_step cuda_tests "$PYTHON" -m pytest -q -m cuda tests/unit --junitxml="$OUT/pytest-cuda.xml"
    fi
    # shellcheck disable=SC2046 # word splitting of the flag lists is wanted
    run_step throughput_eager "$PYTHON" "$ts" --regime throughput $(train_args throughput eager) --no-memory \
        --json "$OUT/throughput_bf16.json"
    # shellcheck disable=SC2046
    run_step throughput_compile "$PYTHON" "$ts" --regime throughput $(train_args throughput compile) --no-memory \
        --json "$OUT/throughput_bf16_compile.json"
    # shellcheck disable=SC2046
    run_step latency_eager "$PYTHON" "$ts" --regime latency $(train_args latency eager) --no-memory \
        --json "$OUT/latency_bf16.json"
    # shellcheck disable=SC2046
    run_step latency_compile "$PYTHON" "$ts" --regime latency $(train_args latency compile) --no-memory \
        --json "$OUT/latency_bf16_compile.json"
    # shellcheck disable=SC2046
    run_step llama7b_slice "$PYTHON" "$ts" --regime llama7b-slice $(train_args llama7b-slice eager) \
        $(if [[ $DRY_RUN == 1 ]]; then echo --memory-steps 1; fi) --json "$OUT/llama7b-slice_bf16.json"
    if [[ -f "$ROOT/benchmarks/packed_runs.py" ]]; then
        # shellcheck disable=SC2046
        run_step packed_runs "$PYTHON" "$ROOT/benchmarks/packed_runs.py" --k 4 --steps 20 \
            $(if [[ $DRY_RUN == 1 ]]; then echo --device cpu --dry-run; else echo --device cuda; fi) --json "$OUT/packed.json"
    else
        skip_step packed_runs "packed_runs.py absent"
    fi
    "$PYTHON" "$ROOT/benchmarks/gpu_run.py" summary "$OUT" --dry-run "$DRY_RUN" --steps "${STEPS[@]}"
}

main "$@"
