"""The GPU check's CPU form: every section runs at toy size and prints its row (what a lent GPU machine runs
at full size with benchmarks/gpu_check.sh)."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow  # ~70 s (an R50 Mask R-CNN step on CPU among its sections); make test-slow runs it
def test_the_gpu_check_runs_every_section_at_toy_size_on_cpu():
    # loader workers as on the GPU machine (with a list of byte tensors per batch, 2 workers stalled here)
    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--toy", "--device", "cpu", "--workers", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    table = out.stdout
    for row in ("MoCo step NCE (img/s)", "Ring/NCE step time", "end to end, decode + augment in the workers",
                "end to end, decode + augment on the device", "IR ring over a 2,048 x 128 bank",
                "IR ring over a 2,048 x 128 bank, batch 8, o on the device", "MoCo ring selection, K = 64, batch 8, o on",
                "Detectron2 Mask R-CNN R50",
                "linear probe, one epoch"):
        assert row in table, (row, table, out.stderr[-2000:])
    assert "failed" not in table, table


def test_without_cuda_the_full_check_says_so_in_one_line():
    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "skipped: CUDA is not available here" in out.stdout
