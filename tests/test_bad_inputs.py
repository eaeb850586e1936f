"""The bad inputs a newcomer tried (../shared/bad-inputs.md, by row): each stops with one sentence and a
non-zero exit, before work is spent where it can be, and none exits 0 with a result."""
import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.cli import main as pretrain_main
from pretrain.lincls import main as lincls_main
from tests.conftest import ROOT, opts_with
from transfer.results import main as results_main
from transfer.suite import main as suite_main


def one_line_error(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{prog}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("key,value", [("SOLVER.BATCH_SIZE", -8), ("SOLVER.EPOCHS", -3), ("SOLVER.BATCH_SIZE", 0),
                                       ("SOLVER.LR", -1), ("SOLVER.MAX_ITERS", "abc")])
def test_rows_3_to_5_values_no_run_can_use(tmp_path, tiny_opts, capsys, key, value):
    assert pretrain_main(["-o", str(tmp_path / "run"), *opts_with(tiny_opts, **{key: value})]) == 2
    assert key in one_line_error(capsys, "ring-pretrain") and not (tmp_path / "run").exists()


def test_row_4_a_training_set_smaller_than_one_batch(tmp_path, tiny_opts, capsys):
    opts = opts_with(tiny_opts, **{"DATA.SUBSET": 5})  # 5 images, batch 8: no full batch, no step
    assert pretrain_main(["-o", str(tmp_path / "run"), *opts]) == 2
    assert "fewer than one batch (SOLVER.BATCH_SIZE 8)" in one_line_error(capsys, "ring-pretrain")
    assert not (tmp_path / "run" / "summary.json").exists()


def _folder(root, splits=("train",), per_class=8):
    rng = np.random.default_rng(0)
    for split in splits:
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


FOLDER_OPTS = {"DATA.NAME": "imagefolder", "DATA.IMAGE_SIZE": 16, "SOLVER.BATCH_SIZE": 4, "MOCO.QUEUE_SIZE": 8,
               "SOLVER.EPOCHS": 1}


def test_row_6_a_corrupt_image_read_by_a_worker_is_one_line(tmp_path, tiny_opts, capsys):
    data = _folder(tmp_path / "data", ("train", "test"))
    bad = data / "train" / "a" / "3.png"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    opts = opts_with(tiny_opts, **FOLDER_OPTS, **{"DATA.ROOT": data, "DATA.NUM_WORKERS": 2, "KNN.ENABLED": False})
    assert pretrain_main(["-o", str(tmp_path / "run"), *opts]) == 2
    err = one_line_error(capsys, "ring-pretrain")
    assert f"{bad} is not a readable image" in err and "delete or replace it" in err


def test_row_9_a_missing_test_split_stops_before_training(tmp_path, tiny_opts, capsys):
    data = _folder(tmp_path / "data", ("train",))
    run = tmp_path / "run"
    assert pretrain_main(["-o", str(run), *opts_with(tiny_opts, **FOLDER_OPTS, **{"DATA.ROOT": data})]) == 2
    err = one_line_error(capsys, "ring-pretrain")
    assert f"{data / 'test'} not found" in err and "KNN.ENABLED False" in err
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoint_last.pth").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.conftest import TINY

    run = tmp_path_factory.mktemp("bad") / "run"
    assert pretrain_main(["-o", str(run), *opts_with(TINY, **{"SOLVER.MAX_ITERS": 2, "KNN.ENABLED": False})]) == 0
    return run


@pytest.mark.parametrize("key,value", [("MODEL.BACKBONE", "resnet50"), ("MODEL.WIDTH", 32)])
def test_row_11_a_run_evaluated_as_another_architecture(tiny_run, capsys, key, value):
    assert lincls_main([str(tiny_run), key, str(value)]) == 2
    assert "a run's backbone is evaluated as it was trained" in one_line_error(capsys, "ring-lincls")


def test_row_16_results_of_a_folder_without_runs(tmp_path, capsys):
    assert results_main([str(tmp_path)]) == 2
    assert "no summary.json under" in one_line_error(capsys, "ring-results")


def test_row_23_an_untrained_probe_is_never_reported(tiny_run, tmp_path, capsys):
    assert lincls_main([str(tiny_run), "-o", str(tmp_path / "lin"), "LINCLS.EPOCHS", "-1"]) == 2
    assert "LINCLS.EPOCHS must be >= 1" in one_line_error(capsys, "ring-lincls")
    assert not (tmp_path / "lin").exists()


@pytest.mark.parametrize("body,expected", [
    ("pretrain:\n  config: cpu_demo\n  estimators: [nce, ringg]\n", "names 'ringg', which is not registered"),
    ("pretrain:\n  config: cpu_demo\n  estimators: [nce, ring_hcl]\n  overrides: [RING_HCL.TAU_PLUS, 1.5]\n",
     "the pretraining stage moco-ring_hcl would stop: RING_HCL.TAU_PLUS must lie in [0, 1)"),
    ("pretrain:\n  config: cpu_demo\n  overrides: [SOLVER.EPOCH, 3]\n", "did you mean SOLVER.EPOCHS?"),
    ("pretrain:\n  config: cpu_demo\nlincls:\n  overrides: [LINCLS.EPOCHS, 0]\n", "LINCLS.EPOCHS must be >= 1"),
    ("pretrain:\n  config: cpu_demo\ndetection:\n  tasks:\n    - name: m\n      config: cpu/scenes_mask_rcnn_R_18_FPN.yaml\n"
     "      overrides: [SOLVER.MAX_ITERS, 5]\n", "did you mean SOLVER.MAX_ITER?"),
])
def test_row_18_every_stage_config_is_checked_by_dry_run(tmp_path, capsys, body, expected):
    (tmp_path / "s.yaml").write_text("name: s\n" + body)
    assert suite_main([str(tmp_path / "s.yaml"), "-o", str(tmp_path / "out"), "--dry-run"]) == 2
    assert expected in one_line_error(capsys, "ring-suite")
    assert not (tmp_path / "out").exists()


CLI = [sys.executable, "-m", "pretrain.cli"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def test_row_20_a_full_disk_is_one_sentence_and_leaves_no_half_checkpoint(tmp_path, tiny_opts):
    def limit():  # a file-size limit of 1 MiB: the first checkpoint (tens of MiB) cannot be written
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    run = tmp_path / "run"
    out = subprocess.run([*CLI, "-o", str(run), *opts_with(tiny_opts, **{"KNN.ENABLED": False})], env=ENV,
                         preexec_fn=limit, capture_output=True, text=True, timeout=300)
    err = out.stderr.strip()
    assert out.returncode == 2 and "\n" not in err and "Traceback" not in err, err
    assert f"could not write {run / 'checkpoint_last.pth'}: no room left" in err and "no checkpoint was written" in err
    assert not list(run.glob("*.pth")) and not list(run.glob(".*.tmp"))


def test_row_21_ctrl_c_names_the_last_checkpoint_and_the_resume_command(tmp_path, tiny_opts):
    run = tmp_path / "run"
    opts = opts_with(tiny_opts, **{"SOLVER.EPOCHS": 200, "CHECKPOINT.PERIOD_ITERS": 2, "KNN.ENABLED": False,
                                   "DATA.NUM_WORKERS": 0})
    proc = subprocess.Popen([*CLI, "-o", str(run), *opts], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoint_last.pth").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1].strip()
    assert proc.returncode == 130 and "\n" not in err and "Traceback" not in err, err
    assert err.startswith("ring-pretrain: interrupted at iteration ")
    assert f"the last checkpoint ({run / 'checkpoint_last.pth'}) holds iteration" in err
    assert err.endswith(f"continue with ring-pretrain -o {run} --resume.")
    saved = int(err.split("holds iteration ")[1].split(":")[0])
    assert torch.load(run / "checkpoint_last.pth", weights_only=False)["iter"] == saved
    resumed = subprocess.run([*CLI, "-o", str(run), "--resume", "SOLVER.MAX_ITERS", str(saved + 2)], env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and f"iteration {saved}" in resumed.stdout, resumed.stderr
    assert json.loads((run / "summary.json").read_text())["metrics"]["iters"] == saved + 2
