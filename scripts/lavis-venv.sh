#!/usr/bin/env bash
# Build the venv of the optional LAVIS BLIP captioning backend (caption.backend: lavis).
#
#   scripts/lavis-venv.sh [DIR]        # default: .venv-lavis in the repository
#
# then set caption.lavis_python: DIR/bin/python in the config. salesforce-lavis 1.0.2 pins
# transformers <4.27, timm 0.4.12 and opencv 4.5.5, so it cannot live in the main env; these
# pins are the set measured to install and import (about 1.5 min and 7 GB). Same stack as
# envs/lavis.yaml, for users without conda.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/.venv-lavis}
python=${PYTHON:-python3}

"$python" -m venv "$dir"
"$dir/bin/pip" install -q --upgrade pip
"$dir/bin/pip" install -q torch==2.14.1 torchvision==0.29.1 salesforce-lavis==1.0.2 \
  "numpy<2" "pandas<3"
# The captioner imports dreamgrid's lavis module from the repository; check the stack loads.
"$dir/bin/python" -c "import lavis.models, torch; print('lavis ok, torch', torch.__version__)"
echo "caption.lavis_python: $dir/bin/python"
