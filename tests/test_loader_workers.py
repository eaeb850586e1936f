"""DATA.NUM_WORKERS: -1 (the default) is auto, no workers on a CPU and a share of the cores on a GPU; the
pretraining views, and so the weights, are the same whatever the count."""
import pytest
import torch

import pretrain.data.workers as workers_mod
from pretrain.config import ConfigError, load_config
from pretrain.data import loader_workers
from pretrain.engine.checkpoint import load_checkpoint
from pretrain.engine.trainer import Trainer
from tests.conftest import opts_with


def test_auto_is_no_workers_on_a_cpu_and_a_share_of_the_cores_on_a_gpu(monkeypatch):
    assert load_config(None, []).DATA.NUM_WORKERS == workers_mod.AUTO == -1
    assert loader_workers(-1, "cpu") == 0 and loader_workers(-1, torch.device("cpu")) == 0
    assert loader_workers(3, "cpu") == 3 and loader_workers(0, "cuda") == 0  # a number is kept as it is
    monkeypatch.setattr(workers_mod, "available_cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader_workers(-1, "cuda") == 8  # 15 free cores, capped at MAX_AUTO
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loader_workers(-1, "cuda:1") == 3  # 4 cores per process, one kept for the process itself
    monkeypatch.setattr(workers_mod, "available_cores", lambda: 2)
    assert loader_workers(-1, "cuda") == 1  # never none on a GPU


def test_a_worker_count_below_auto_is_refused():
    with pytest.raises(ConfigError, match="DATA.NUM_WORKERS must be >= -1"):
        load_config(None, ["DATA.NUM_WORKERS", "-2"])


def test_pretraining_on_a_cpu_loads_in_process_and_its_weights_do_not_depend_on_the_worker_count(tmp_path, tiny_opts):
    """Auto runs the loader in the training process on a CPU; two workers give the same weights bit for bit
    (every sample's views are seeded by (seed, epoch, index)), which is why the default could change."""
    def weights(workers):
        cfg = load_config(None, opts_with(tiny_opts, **{"DATA.NUM_WORKERS": workers, "SOLVER.EPOCHS": 1,
                                                        "KNN.ENABLED": False}))
        trainer = Trainer(cfg, tmp_path / f"w{workers}")
        assert trainer._loader().num_workers == (0 if workers == -1 else workers)
        trainer.train()
        return load_checkpoint(tmp_path / f"w{workers}", map_location="cpu")["model"]

    auto, two = weights(-1), weights(2)
    assert auto.keys() == two.keys()
    assert all(torch.equal(auto[k], two[k]) for k in auto)
