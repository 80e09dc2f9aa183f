#!/usr/bin/env bash
# The checks a CUDA machine adds, in one run: the tests skipped on the CPU, the GPU benchmarks (which write
# their sections of benchmarks/RESULTS.md), and the whole suite with device="auto" meaning the GPU, one
# pytest process per test file. Logs go to OUT (default: a new temporary folder), a summary to stdout.
#
# Usage: benchmarks/gpu_checks.sh [OUT] [SECONDS_FOR_THE_SUITE]
set -u
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
suite_seconds=${2:-400}
mkdir -p "$out/suite"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
started=$(date +%s)
stamp() { echo "=== $1 at +$(($(date +%s) - started)) s"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
stamp "the tests that need CUDA"
"$python" -m pytest -q -rs tests/test_feature_extraction.py tests/test_fine_tuning.py tests/test_domain_adaptation.py -k "cuda or gpu" \
    >"$out/cuda_tests.log" 2>&1
tail -1 "$out/cuda_tests.log"
stamp "extraction throughput"
timeout 300 "$python" benchmarks/bench_extraction.py --images 512 --rounds 3 --batch-size 256 \
    --small-batch-size 64 --device cuda --skip-memory >"$out/extraction.log" 2>&1
tail -25 "$out/extraction.log"
stamp "fine-tuning epochs"
timeout 400 "$python" benchmarks/bench_fine_tuning.py --sections epoch precision fast --images 640 --epochs 3 \
    --rounds 2 --batch-size 64 --device cuda >"$out/fine_tuning.log" 2>&1
tail -25 "$out/fine_tuning.log"
stamp "the suite, a process per file"
(ls tests/test_*.py; echo sktransfer) | OMP_NUM_THREADS=2 timeout "$suite_seconds" xargs -P 10 -I{} \
    sh -c "\"$python\" -m pytest -q -rfE --tb=short {} >\"$out/suite/\$(basename {}).log\" 2>&1"
for log in "$out"/suite/*.log; do echo "$(basename "$log"): $(grep -E '(passed|failed|error)' "$log" | tail -1)"; done
grep -hE "^(FAILED|ERROR) " "$out"/suite/*.log | cut -c1-200
stamp "end; logs in $out"
