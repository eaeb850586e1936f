import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from pretrain.cli import main as pretrain_main
from pretrain.engine.checkpoint import CheckpointError, load_checkpoint
from pretrain.evaluation.linear import run_lincls
from tests.conftest import ROOT, opts_with

CLI = [sys.executable, "-m", "pretrain.cli"]


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return env


def test_run_directory_is_complete(tmp_path, tiny_opts):
    run = tmp_path / "run"
    assert pretrain_main(["-o", str(run), *opts_with(tiny_opts, **{"LOG.TENSORBOARD": "True"})]) == 0
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "checkpoint_last.pth", "checkpoint_e0002.pth",
            "tb"} <= names
    assert "checkpoint_e0001.pth" not in names  # retention: every CHECKPOINT.KEEP_EVERY (50) epochs and the last
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stage"] == "pretrain" and summary["method"] == "moco" and summary["estimator"] == "nce"
    assert summary["metrics"]["iters"] == 16 and 0 <= summary["metrics"]["knn_top1"] <= 100
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) >= 8 and all(l == l and l < 50 for l in losses)  # finite
    knn = [r["knn_top1"] for r in rows if "knn_top1" in r]
    assert len(knn) == 2 and summary["metrics"]["knn_top1"] == knn[-1]  # once per epoch; the summary's the last
    # the summary's loss is the mean of the losses the run read: at least every logged one, each in it once
    assert min(losses) <= summary["metrics"]["loss"] <= max(losses)
    assert summary["metrics"]["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-9)
    ck = load_checkpoint(run)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["iter"]) == (2, 0, 16)
    assert ck["model"]["queue.keys"].shape == (32, 16)
    assert list((run / "tb").iterdir())  # TensorBoard event file


def test_existing_run_needs_resume(tmp_path, tiny_opts, capsys):
    run = tmp_path / "run"
    assert pretrain_main(["-o", str(run), *opts_with(tiny_opts, **{"SOLVER.EPOCHS": 1})]) == 0
    assert pretrain_main(["-o", str(run), *tiny_opts]) == 2
    assert "add --resume" in capsys.readouterr().err


def _final_weights(run: Path) -> dict:
    return load_checkpoint(run)["model"]


def test_killed_mid_epoch_then_resumed_equals_uninterrupted(tmp_path, tiny_opts):
    opts = opts_with(tiny_opts, **{"SOLVER.EPOCHS": 3, "CHECKPOINT.PERIOD_ITERS": 3, "KNN.ENABLED": False})
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run([*CLI, "-o", str(ref), *opts], check=True, env=_env(), capture_output=True)

    proc = subprocess.Popen([*CLI, "-o", str(killed), *opts], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ck_path, seen = killed / "checkpoint_last.pth", None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ck_path.exists():
            ck = torch.load(ck_path, weights_only=True)
            if ck["batch_in_epoch"] != 0 and ck["iter"] < 24:
                proc.send_signal(signal.SIGKILL)
                seen = ck
                break
        time.sleep(0.01)
    proc.wait()
    assert seen is not None, "the run finished before it could be killed mid-epoch"
    assert load_checkpoint(killed)["iter"] < 24  # really interrupted

    out = subprocess.run([*CLI, "-o", str(killed), "--resume"], env=_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "resumed" in out.stdout
    a, b = _final_weights(ref), _final_weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_rejects_a_checkpoint_of_another_kind(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    torch.save(torchvision.models.resnet18().state_dict(), run / "checkpoint_last.pth")
    assert pretrain_main(["-o", str(run), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a ring-pretrain checkpoint" in err and str(run) in err and "\n" not in err
    (run / "checkpoint_last.pth").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(run)


def test_queue_must_divide_by_batch(tmp_path, tiny_opts, capsys):
    assert pretrain_main(["-o", str(tmp_path / "r"), *opts_with(tiny_opts, **{"MOCO.QUEUE_SIZE": 30})]) == 2
    assert "MOCO.QUEUE_SIZE 30 is not a multiple" in capsys.readouterr().err


def test_lincls_writes_summaries_for_all_protocols(tmp_path, tiny_opts):
    run = tmp_path / "run"
    assert pretrain_main(["-o", str(run), *opts_with(tiny_opts, **{"SOLVER.EPOCHS": 1})]) == 0
    s = run_lincls(run, progress=False)
    assert s["stage"] == "lincls" and 0 <= s["metrics"]["top1"] <= 100
    assert json.loads((run / "lincls" / "summary.json").read_text())["metrics"] == s["metrics"]
    r = run_lincls(run, random_init=True, progress=False)
    assert r["method"] == "random_init" and (run / "lincls_random_init" / "summary.json").exists()
    assert s["protocol"] == "cached" and r["protocol"] == "cached"
    for name in ("paper", "moco"):
        t = run_lincls(run, tmp_path / name, ["LINCLS.PROTOCOL", name, "LINCLS.EPOCHS", "1"], progress=False)
        assert t["protocol"] == name and 0 <= t["metrics"]["top1"] <= 100
        assert len(t["probe_loss"]) == 1 and t["probe_loss"][0] > 0
    # the probe's training loss per epoch, for the run's curves.png (transfer/curves.py)
    from pretrain.config import load_config

    epochs = load_config(str(run / "config.yaml")).LINCLS.EPOCHS
    assert len(s["probe_loss"]) == epochs and all(np.isfinite(s["probe_loss"]))
    from transfer.curves import plot_run, probe_losses, read_pretraining

    iters, losses, _, _ = read_pretraining(run)
    assert iters and len(iters) == len(losses)
    assert probe_losses(run) == {"lincls": s["probe_loss"], "lincls_random_init": r["probe_loss"]}
    assert plot_run(run).stat().st_size > 1000 and plot_run(tmp_path / "empty") is None


def test_random_init_baseline_follows_the_seed_override(tmp_path, tiny_opts):
    from pretrain.evaluation.pretrained import load_backbone

    run = tmp_path / "run"
    assert pretrain_main(["-o", str(run), *opts_with(tiny_opts, **{"SOLVER.MAX_ITERS": 1, "KNN.ENABLED": False})]) == 0
    w = lambda *a, **k: load_backbone(run, *a, **k)[1].state_dict()["conv1.weight"]  # noqa: E731
    assert torch.equal(w(True), w(True)) and torch.equal(w(True, ["SEED", "3"]), w(True, ["SEED", "3"]))
    assert not torch.equal(w(True, ["SEED", "3"]), w(True, ["SEED", "4"]))
    ck = load_checkpoint(run)["model"]
    pretrained = next(v for k, v in ck.items() if k.endswith("backbone.conv1.weight") and "encoder_q" in k)
    assert torch.equal(w(False, ["SEED", "3"]), pretrained)


def test_auto_resume_of_a_finished_run_keeps_its_summary(tmp_path, tiny_opts):
    run = tmp_path / "run"
    opts = opts_with(tiny_opts, **{"SOLVER.EPOCHS": 1, "KNN.ENABLED": False})
    assert pretrain_main(["-o", str(run), *opts]) == 0
    before = (run / "summary.json").read_text()
    assert pretrain_main(["-o", str(run), "--auto-resume", *opts]) == 0
    assert (run / "summary.json").read_text() == before


@pytest.mark.parametrize("channels_last", [True, False])
def test_memory_format_follows_config_on_cpu(tmp_path, tiny_opts, channels_last):
    from pretrain.config import load_config
    from pretrain.engine.trainer import Trainer

    cfg = load_config(None, opts_with(tiny_opts, **{"MODEL.CHANNELS_LAST": channels_last}))
    t = Trainer(cfg, tmp_path / "run")
    convs = [m.weight for m in t.objective.modules() if isinstance(m, torch.nn.Conv2d)]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert convs and all(w.is_contiguous(memory_format=fmt) for w in convs)
    x = t._to_device(torch.rand(4, 3, 16, 16))
    assert x.is_contiguous(memory_format=fmt) and (channels_last != x.is_contiguous())


@pytest.mark.slow  # the default metric (bank_1nn) runs by default, below
def test_adaptive_acc_schedule_follows_the_knn_monitor_when_asked(tmp_path, tiny_opts, capsys):
    run = tmp_path / "run"
    opts = opts_with(tiny_opts, **{"OBJECTIVE.ESTIMATOR": "ring", "RING.SCHEDULE": "adaptive_acc", "SOLVER.EPOCHS": 3,
                                   "RING.ADAPTIVE_ACC_METRIC": "knn"})
    assert pretrain_main(["-o", str(run), *opts]) == 0
    state = load_checkpoint(run)["objective_extra"]["schedule"]
    knn = [json.loads(line)["knn_top1"] for line in (run / "metrics.jsonl").read_text().splitlines()
           if "knn_top1" in line]
    assert state["history"] == pytest.approx(knn) and len(knn) == 3
    assert pretrain_main(["-o", str(tmp_path / "no_knn"), *opts_with(opts, **{"KNN.ENABLED": False})]) == 2
    assert "adapts to the kNN monitor's accuracy; set KNN.ENABLED True" in capsys.readouterr().err


def test_adaptive_acc_follows_the_authors_bank_1nn_every_epoch(tmp_path, tiny_opts):
    """The default metric: every epoch (KNN.PERIOD_EPOCHS 10 notwithstanding), the test split's 1-NN against the
    bank of training anchors, recomputed here from the checkpoint's bank and encoder: the value the schedule got."""
    from pretrain.config import load_config
    from pretrain.contrastive.objectives import build_objective
    from pretrain.data import build_dataset
    from pretrain.data.transforms import eval_transform
    from pretrain.data.views import TransformedDataset
    from pretrain.evaluation.bank_nn import Embedder, nearest_neighbour_top1
    from pretrain.evaluation.features import extract_features

    run = tmp_path / "run"
    opts = opts_with(tiny_opts, **{"OBJECTIVE.ESTIMATOR": "ring", "RING.SCHEDULE": "adaptive_acc", "SOLVER.EPOCHS": 3,
                                   "KNN.PERIOD_EPOCHS": 10})
    assert pretrain_main(["-o", str(run), *opts]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    bank_acc = [r["bank_1nn_top1"] for r in rows if "bank_1nn_top1" in r]
    ck = load_checkpoint(run)
    assert len(bank_acc) == 3 and ck["objective_extra"]["schedule"]["history"] == pytest.approx(bank_acc)
    assert sum("knn_top1" in r for r in rows) == 1  # the kNN monitor: its own period (and the last epoch)
    cfg = load_config(None, opts)
    obj = build_objective(cfg, 64, 8).to(memory_format=torch.channels_last)  # as trained (MODEL.CHANNELS_LAST)
    obj.load_state_dict(ck["model"])
    bank = ck["objective_extra"]["anchor_bank"]
    assert bank.shape == (64, 16) and torch.allclose(bank.norm(dim=1), torch.ones(64))  # every image's anchor
    train = build_dataset(cfg.DATA, "train")
    test = TransformedDataset(build_dataset(cfg.DATA, "test"), eval_transform(16))
    q, y = extract_features(Embedder(obj), test, torch.device("cpu"))
    assert nearest_neighbour_top1(q, y, bank, torch.as_tensor(train.targets)) == pytest.approx(bank_acc[-1])


def test_adaptive_schedule_follows_the_loss_without_reading_it(tmp_path, tiny_opts):
    """A run with the loss-adaptive ring (LOG.PERIOD 1, so every loss and o is logged): each step's o is the
    authors' rule applied to the losses before it, and the checkpoint holds the last window of losses."""
    from tests.test_contrastive_core import authors_adaptive

    run = tmp_path / "run"
    opts = opts_with(tiny_opts, **{"OBJECTIVE.ESTIMATOR": "ring", "RING.SCHEDULE": "adaptive", "RING.OUTER": 0.1,
                                   "RING.ADAPTIVE_WINDOW": 3, "RING.ADAPTIVE_DELTA": 0.05, "LOG.PERIOD": 1,
                                   "SOLVER.MAX_ITERS": 12, "KNN.ENABLED": False})
    assert pretrain_main(["-o", str(run), *opts]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "outer" in r]
    losses, outer = [r["loss"] for r in rows], [r["outer"] for r in rows]
    assert len(rows) == 12 and outer == authors_adaptive(losses, 0.1, 0.05, 3)
    assert len(set(outer)) > 1  # it moved
    assert load_checkpoint(run)["objective_extra"]["schedule"]["history"] == losses[-3:]


def test_cpu_bf16_autocast_is_opt_in_and_trains(tmp_path, tiny_opts):
    from pretrain.config import load_config
    from pretrain.engine.trainer import Trainer

    opts = opts_with(tiny_opts, **{"OBJECTIVE.ESTIMATOR": "ring", "SOLVER.MAX_ITERS": 3, "KNN.ENABLED": False})
    assert Trainer(load_config(None, opts), tmp_path / "default").amp is False  # SOLVER.AMP means CUDA
    trainer = Trainer(load_config(None, opts_with(opts, **{"SOLVER.AMP_CPU": True})), tmp_path / "bf16")
    assert trainer.amp is True
    with trainer.amp_context():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    s = trainer.train()
    assert s["metrics"]["iters"] == 3 and 0 < s["metrics"]["loss"] < 50


@pytest.mark.slow  # (27 s; test_run_directory_is_complete checks the default retention)
def test_checkpoint_retention_keeps_last_final_and_every_nth_epoch(tmp_path, tiny_opts):
    run = tmp_path / "run"
    opts = opts_with(tiny_opts, **{"SOLVER.EPOCHS": 5, "CHECKPOINT.KEEP_EVERY": 2, "KNN.ENABLED": False})
    assert pretrain_main(["-o", str(run), *opts]) == 0
    kept = sorted(p.name for p in run.glob("checkpoint_*.pth"))
    assert kept == ["checkpoint_e0002.pth", "checkpoint_e0004.pth", "checkpoint_e0005.pth", "checkpoint_last.pth"]
    final, last = run / "checkpoint_e0005.pth", run / "checkpoint_last.pth"
    assert final.read_bytes() == last.read_bytes() and os.path.samefile(final, last)  # serialised once, linked
    assert load_checkpoint(run / "checkpoint_e0002.pth")["epoch"] == 2


def test_model_compile_compiles_every_encoder_in_place():
    from pretrain.config import load_config
    from pretrain.contrastive.objectives import build_objective
    from pretrain.engine.trainer import compile_encoders
    from pretrain.modeling.backbones import Encoder

    for name, count in [("moco", 2), ("cmc", 2), ("ir", 1), ("simclr", 1)]:
        obj = build_objective(load_config(None, ["OBJECTIVE.NAME", name, "MOCO.QUEUE_SIZE", "64"]), 64, 8)
        names = list(obj.state_dict())
        assert compile_encoders(obj) == count
        assert all(m._compiled_call_impl is not None for m in obj.modules() if isinstance(m, Encoder))
        assert list(obj.state_dict()) == names  # checkpoints keep their parameter names


@pytest.mark.slow
def test_a_compiled_step_matches_an_eager_one():
    from pretrain.config import load_config
    from pretrain.contrastive.objectives import build_objective
    from pretrain.engine.trainer import compile_encoders

    cfg = load_config(None, ["MOCO.QUEUE_SIZE", "64", "MODEL.WIDTH", "16", "MODEL.SMALL_STEM", "False"])
    x1, x2 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    losses = []
    for compiled in (False, True):
        torch.manual_seed(0)
        obj = build_objective(cfg, 64, 8)
        if compiled:
            compile_encoders(obj)
        losses.append(obj(x1, x2)[0].detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)


def test_ring_knn_repeats_the_monitor_and_scores_the_random_init_twin(tmp_path, tiny_opts, capsys):
    import json

    from pretrain.knn import main as knn_main

    run = tmp_path / "run"
    assert pretrain_main(["-o", str(run), *opts_with(tiny_opts, **{"SOLVER.EPOCHS": 1})]) == 0
    monitor = json.loads((run / "summary.json").read_text())["metrics"]["knn_top1"]
    assert knn_main([str(run)]) == 0
    s = json.loads((run / "knn" / "summary.json").read_text())
    assert s["stage"] == "knn" and s["metrics"]["top1"] == monitor and s["k"] == 5  # one computation, same number
    assert s["config"] == json.loads((run / "summary.json").read_text())["config"]  # the run's row
    # another k is recorded as the evaluation's own, the run's row unchanged
    assert knn_main([str(run), "KNN.K", "1", "-o", str(tmp_path / "k1")]) == 0
    k1 = json.loads((tmp_path / "k1" / "summary.json").read_text())
    assert k1["k"] == 1 and k1["config"]["KNN.K"] == "5"
    assert knn_main([str(run), "--random-init"]) == 0
    r = json.loads((run / "knn_random_init" / "summary.json").read_text())
    assert r["method"] == "random_init" and r["metrics"]["top1"] != monitor
    capsys.readouterr()
    assert knn_main([str(run), "SOLVER.LR", "0.1"]) == 2  # a setting of the model, not of kNN: refused at once
    assert "ring-knn takes KNN.*" in capsys.readouterr().err


def test_a_second_writer_on_one_run_directory_stops_with_the_holders_pid(tmp_path, tiny_opts, capsys):
    """Two ring-pretrain processes on one -o would interleave metrics.jsonl and checkpoints: the second stops."""
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pretrain.io import RunDirectoryLock; "
                               f"lock = RunDirectoryLock({str(run)!r}); print('locked', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert pretrain_main(["-o", str(run), *tiny_opts]) == 2
        err = capsys.readouterr().err
        assert f"{run} is in use by pid {holder.pid}" in err and not (run / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert pretrain_main(["-o", str(run), *tiny_opts]) == 0  # the holder gone (killed), the lock went with it
    assert pretrain_main(["-o", str(run), "--resume", *tiny_opts]) == 0  # released after train(): same process
    assert (run / ".lock").read_text() == str(os.getpid())


def test_global_rng_states_round_trip_through_a_checkpoint(tmp_path, tiny_opts):
    """Python, NumPy (with its cached Gaussian) and torch: saved, perturbed, restored, they draw the same; and a
    resumed Trainer leaves the global RNGs where the checkpoint had them (a future unseeded consumer stays exact)."""
    import random

    import numpy as np

    from pretrain.engine.seeding import rng_state, seed_everything, set_rng_state

    def draws():
        return random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3).tolist()

    seed_everything(3)
    np.random.standard_normal()  # an odd number of Gaussians: NumPy caches the second
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = draws()
    seed_everything(99)
    draws()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == expected

    from pretrain.config import load_config
    from pretrain.engine.trainer import Trainer

    run = tmp_path / "run"
    assert pretrain_main(["-o", str(run), *opts_with(tiny_opts, **{"SOLVER.MAX_ITERS": 3, "KNN.ENABLED": False})]) == 0
    saved = load_checkpoint(run)["rng"]
    set_rng_state(saved)
    expected = draws()
    seed_everything(7)
    trainer = Trainer(load_config(None, opts_with(tiny_opts, **{"SOLVER.MAX_ITERS": 6, "KNN.ENABLED": False})), run,
                      resume=True)
    assert draws() == expected
    trainer.train()


def test_the_log_says_how_long_each_step_waited_for_the_loader(tmp_path, tiny_opts):
    """data_wait_s is the loader's share of step_s: a dataset that takes 30 ms per image (no workers, batch 8)
    makes every step wait at least 8 x 30 ms; the step's own work is the rest."""
    from pretrain.config import load_config
    from pretrain.data import DATASET_REGISTRY, SyntheticShapes
    from pretrain.engine.trainer import Trainer

    class Slow(SyntheticShapes):
        def __getitem__(self, i):
            time.sleep(0.03)
            return super().__getitem__(i)

    if "slow_shapes_for_test" not in DATASET_REGISTRY:
        DATASET_REGISTRY.register(name="slow_shapes_for_test")(lambda data_cfg, split: Slow(split, 64, 16))
    cfg = load_config(None, opts_with(tiny_opts, **{"DATA.NAME": "slow_shapes_for_test", "SOLVER.MAX_ITERS": 4,
                                                    "KNN.ENABLED": False, "LOG.PERIOD": 2}))
    Trainer(cfg, tmp_path / "run").train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert 8 * 0.03 <= r["data_wait_s"] < r["step_s"] < 8 * 0.03 + 5.0
        assert abs(r["img_per_s"] - 8 / r["step_s"]) < 1e-6 * r["img_per_s"] + 1e-3


def test_ctrl_c_stops_between_steps_and_a_second_one_at_once():
    """A SIGINT only asks (a KeyboardInterrupt raised inside a finalizer would be swallowed); the loop raises
    it after the step; a second SIGINT raises where it lands; the previous handler comes back."""
    from pretrain.engine.hooks import StopBetweenSteps

    stop = StopBetweenSteps()
    before = signal.getsignal(signal.SIGINT)
    with stop.installed():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.asked
        with pytest.raises(KeyboardInterrupt):
            stop.after_step(None, {})
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before
