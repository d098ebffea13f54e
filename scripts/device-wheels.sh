#!/usr/bin/env bash
# Wheels the lent GPU machine lacks (it has torch, transformers, accelerate, peft, but no
# diffusers or bitsandbytes, and no network), downloaded here into .whl/ for the device tool's
# `carry`. diffusers as pinned in envs/train.yaml. See
# benchmarks/device_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014; do
    platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl \
    diffusers==0.42.1 bitsandbytes==0.50.2 importlib_metadata==8.7.0 zipp==3.23.0
du -sh .whl
