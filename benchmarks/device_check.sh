#!/usr/bin/env bash
# The GPU checks in one call of the device tool, on a lent NVIDIA machine: the study's own
# path end to end (benchmarks/study_path.py: train.run epochs 1 and 2 with adamw and adamw8bit,
# 8 renders of the exported fp16 checkpoint, embedding them), then the trainer and sampler
# benchmarks of issues #3 and #4.
#
# Here first: scripts/device-wheels.sh (writes .whl/, ignored by git). Then:
#   device run  command="bash benchmarks/device_check.sh"  carry=[".whl"]  timeout_s=600
# (or name the steps: `bash benchmarks/device_check.sh study`; the FLUX.1 trainer benchmark
# runs only by name: `bash benchmarks/device_check.sh flux`). Each result lands in $OUT as
# JSON (study_path.json, and the study's 8 renders under $OUT/study/renders: where the device
# has no deepface, embed them here with `python benchmarks/study_path.py --embed-only DIR`);
# copy the numbers, with the card's name, into benchmarks/RESULTS.md. Budget: each step has
# its own limit (330 + 150 + 90 s, under the tool's 600 s), so one that hangs still leaves the
# others' results.
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
steps=${*:-study train sample}
for step in $steps; do
    case $step in
    # The study's path: real entry points, SD 1.5 shapes, random weights; peak memory per step.
    study) run study_path 330 python3 benchmarks/study_path.py --out "$out/study" ;;
    # Full fine-tune (fp16 + 8-bit AdamW + gradient checkpointing) and LoRA, ours vs diffusers'
    # train_dreambooth.py step, SD 1.5 shapes, 512 px, batch 1: steps/s and peak memory.
    train) run bench_train 150 python3 benchmarks/bench_train.py --sd15 ;;
    # Batched vs one-at-a-time rendering, SD 1.5 shapes, 512 px, Euler 30 steps, fp16.
    sample) run bench_sample 90 python3 benchmarks/bench_sample.py --sd15 --renders 32 --batch-size 8 ;;
    # SDXL LoRA (fp16) and full fine-tune (fp16 + 8-bit AdamW + gradient checkpointing), ours vs
    # diffusers' train_dreambooth_lora_sdxl.py step, SDXL-base shapes (random), 1024 px, batch 1.
    # Not in the default steps: its own call, `bash benchmarks/device_check.sh sdxl`.
    sdxl) run bench_train_sdxl 540 python3 benchmarks/bench_train_sdxl.py --sdxl --images 2 --repeats 3 ;;
    # FLUX.1 LoRA (rank 16, bf16, gradient checkpointing, 512 px, T5 at 512 tokens), ours vs
    # diffusers' train_dreambooth_lora_flux.py step, FLUX.1-dev shapes with random weights
    # built on the GPU: steps/s and peak memory. Not in the default steps (its own call).
    flux) run bench_train_flux 300 python3 benchmarks/bench_train_flux.py --gpu ;;
    # Batched vs one-at-a-time rendering at the study's settings, published shapes (random):
    # SDXL 1024 px, Euler 30 steps, fp16; FLUX.1-dev 1024 px, 28 steps, bf16. Own calls.
    sample_sdxl) run bench_sample_sdxl 300 python3 benchmarks/bench_sample_families.py --family sdxl --full --renders 8 --batch-size 4 ;;
    sample_flux) run bench_sample_flux 400 python3 benchmarks/bench_sample_families.py --family flux --full --renders 4 --batch-size 2 ;;
    *) echo "unknown step $step (study, train, sample, sdxl, flux, sample_sdxl, sample_flux)" >&2 ;;
    esac
done
