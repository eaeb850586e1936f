#!/usr/bin/env bash
# Wheels for the GPU check's machine, which cannot reach PyPI: the pure-Python dependencies built here
# (any Python 3), the compiled ones downloaded for the device's Python version.  Torch is the device's own.
#   tools/gpu_wheels.sh 3.10        -> .whl/ (git-ignored; pass it as carry to the device run)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:?the device Python version, e.g. 3.10}
.venv/bin/python -m pip wheel -q -w .whl --no-deps -c constraints.txt fvcore iopath yacs portalocker tabulate termcolor tqdm
.venv/bin/python -m pip download -q -d .whl --no-deps --only-binary=:all: --python-version "$PY" \
  numpy pyyaml pandas python-dateutil pytz tzdata six pycocotools
ls .whl
