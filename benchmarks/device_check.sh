#!/usr/bin/env bash
# The GPU checks of issues #3 and #4 in one call of the device tool, on a lent NVIDIA machine.
#
# Here first: scripts/device-wheels.sh (writes .whl/, ignored by git). Then:
#   device run  command="bash benchmarks/device_check.sh"  carry=[".whl"]  timeout_s=600
# Each result lands in $OUT as JSON; copy the numbers, with the card's name, into
# benchmarks/RESULTS.md. Budget: about 8 minutes on an H100 (each benchmark has its own limit,
# so one that hangs still leaves the others' results).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/dreamgrid-device}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/workflow${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv"
python3 - <<'PY' | tee "$out/versions.txt"
import importlib
for name in ("torch", "diffusers", "transformers", "accelerate", "peft", "bitsandbytes"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as err:  # report and go on: the benchmark says what it could not do
        print(name, "MISSING", err)
PY
run() {  # name, seconds, command...
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    timeout "$limit" "$@" >"$out/$name.json" 2>"$out/$name.log"
    echo "rc=$?"
    tail -5 "$out/$name.log"
    cat "$out/$name.json"
}
# Full fine-tune (fp16 + 8-bit AdamW + gradient checkpointing) and LoRA, ours vs diffusers'
# train_dreambooth.py step, SD 1.5 shapes, 512 px, batch 1: steps/s and peak memory.
run bench_train 300 python3 benchmarks/bench_train.py --sd15
# Batched vs one-at-a-time rendering, SD 1.5 shapes, 512 px, Euler 30 steps, fp16.
run bench_sample 200 python3 benchmarks/bench_sample.py --sd15 --renders 32 --batch-size 8
