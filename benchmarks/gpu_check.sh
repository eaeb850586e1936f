#!/usr/bin/env bash
# The GPU check on a lent machine (its image has its own Python and torch, no internet): install this
# project's other dependencies from the carried wheels (.whl/, made here by tools/gpu_wheels.sh), then
# run benchmarks/gpu_check.py.  A package that does not install only makes its sections skip.
#   device run:  bash benchmarks/gpu_check.sh            (carry: .whl)
set -u
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  for pkg in numpy pyyaml tqdm tabulate termcolor portalocker yacs iopath fvcore pandas pycocotools; do
    python -m pip install -q --no-index --find-links .whl "$pkg" >/dev/null 2>&1 || echo "[gpu-check] $pkg: not installed from .whl"
  done
fi
exec python benchmarks/gpu_check.py "$@"
