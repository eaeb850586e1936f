"""The pretraining trainer: data, objective, optimizer, AMP, DDP and checkpoints, each built by an overridable
``build_*`` method, with the loop's other concerns (logging, kNN monitor, periodic checkpoints, the adaptive
schedule's loss feed) as hooks (``hooks.py``, ``evaluation/knn.py``).

One ``Trainer`` serves every objective.  A run directory receives ``config.yaml``, ``metrics.jsonl``,
``summary.json``, ``tb/`` (TensorBoard), ``checkpoint_last.pth`` (every CHECKPOINT.PERIOD_ITERS
iterations and every epoch) and ``checkpoint_eNNNN.pth`` per epoch.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pretrain import distributed as D
from pretrain.common import resolve_device
from pretrain.config import CfgNode, ConfigError, get_key, provenance
from pretrain.contrastive.objectives import build_objective, objective_class
from pretrain.data import build_dataset, loader_workers
from pretrain.data.batch_sampler import ResumableBatchSampler
from pretrain.data.transforms import build_batch_augment, build_train_transform
from pretrain.data.views import NO_VIEW, EncodedImages, RawImages, TwoViewDataset, collate_encoded, decode_batch
from pretrain.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pretrain.engine.hooks import Hook, LossFeed, MetricsWriter, PeriodicCheckpointer
from pretrain.engine.lr_schedules import build_lr_lambda
from pretrain.engine.optimizers import build_optimizer
from pretrain.engine.seeding import derive_seed, rng_state, seed_everything, set_rng_state
from pretrain.evaluation.bank_nn import BankNearestNeighbour
from pretrain.evaluation.knn import KNNMonitor
from pretrain.io import MetricsLog, RunDirectoryLock, atomic_write_text, write_summary
from pretrain.modeling.backbones import Encoder


def memory_format(cfg: CfgNode) -> torch.memory_format:
    """Channels-last (NHWC) when ``MODEL.CHANNELS_LAST``: faster convolutions on CUDA and on CPU (oneDNN)."""
    return torch.channels_last if cfg.MODEL.CHANNELS_LAST else torch.contiguous_format


class Trainer:
    """One trainer for every objective.  ``__init__`` calls the ``build_*`` seams in a fixed order (the order
    fixes the random streams: a subclass that overrides one seam leaves the others' numbers unchanged):
    ``build_train_set`` (the dataset, its views and the resumable batch sampler), ``build_model`` (the
    objective, on its device, in DDP when distributed), ``build_optimizer`` (``SOLVER.OPTIMIZER`` from the
    optimizer registry), ``build_lr_scheduler`` and ``build_hooks`` (the loop's concerns)."""

    def __init__(self, cfg: CfgNode, run_dir: str | Path, resume: bool = False):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        dev = resolve_device(cfg.DEVICE)
        self.rank, self.world, local_rank = D.init_from_env(dev.type)
        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        self.device, self.main = dev, self.rank == 0
        # one writer per run directory: a second ring-pretrain on the same -o stops here, before any work
        self._lock = RunDirectoryLock(self.run_dir) if self.main else None
        # One seed on every rank while the model and its pools (queue, banks) are built, so that they start
        # identical everywhere; each rank's own stream afterwards (rank 0 keeps the one-process sequence).
        seed_everything(cfg.SEED)
        self.train_set, self.batch_sampler = self.build_train_set(cfg)
        self.iters_per_epoch = self.batch_sampler.batches_per_epoch
        if self.iters_per_epoch == 0:  # full batches only: no step would ever run
            raise ConfigError(f"the training set holds {len(self.train_set)} images, fewer than one batch "
                              f"(SOLVER.BATCH_SIZE {cfg.SOLVER.BATCH_SIZE}); lower SOLVER.BATCH_SIZE or add data.")
        self.total_iters = self.iters_per_epoch * cfg.SOLVER.EPOCHS
        if cfg.SOLVER.MAX_ITERS:
            self.total_iters = min(self.total_iters, cfg.SOLVER.MAX_ITERS)
        self.objective, self.model = self.build_model(cfg)
        self.optimizer = self.build_optimizer(cfg, [p for p in self.objective.parameters() if p.requires_grad])
        self.lr_scheduler = self.build_lr_scheduler(cfg, self.optimizer)
        s = cfg.SOLVER
        self.amp = (dev.type == "cuda" and s.AMP) or (dev.type == "cpu" and s.AMP_CPU)
        self.epoch, self.batch_in_epoch, self.iter, self.batch_images = 0, 0, 0, 0
        self.data_wait = 0.0  # seconds the last step waited for the loader
        self.last_knn: float | None = None
        if resume:
            self._resume()
        self.saved_iter = self.iter if resume else None  # the iteration the last checkpoint holds

        self.log = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.main)
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", cfg.dump())
        self._loss, self._loss_float = None, None
        self.hooks = self.build_hooks()
        if resume and getattr(self, "_metrics_so_far", None):
            self.writer.load_state_dict(self._metrics_so_far)  # the summary covers the whole run, not this session

    # -- the seams -----------------------------------------------------------------------------
    def build_train_set(self, cfg: CfgNode):
        """(the training set as the loader reads it, the deterministic resumable batch sampler)."""
        base = build_dataset(cfg.DATA, cfg.DATA.TRAIN_SPLIT, cfg.DATA.SUBSET)
        self.dataset_size = len(base)
        self.train_targets = getattr(base, "targets", None)  # labels, for a monitor that needs them
        self.views = objective_class(cfg.OBJECTIVE.NAME).views
        self.device_augment = None
        self.decode_on_device = cfg.DATA.DECODE_ON == "device"
        if cfg.DATA.DECODE_ON not in ("loader", "device"):
            raise ConfigError(f"DATA.DECODE_ON {cfg.DATA.DECODE_ON!r}: choose loader (in the workers) or device "
                              "(JPEGs decoded on the training device).")
        if self.decode_on_device and cfg.DATA.AUGMENT_ON != "device":
            raise ConfigError("DATA.DECODE_ON device hands the training step undecoded JPEGs, which only the "
                              "batched augmentation takes; set DATA.AUGMENT_ON device too.")
        if cfg.DATA.AUGMENT_ON == "device":  # the loader hands over uint8 images; the step augments the batch
            self.device_augment = build_batch_augment(cfg.DATA.AUGMENT, cfg.DATA.IMAGE_SIZE)
            train_set = EncodedImages(base, cfg.DATA.NAME) if self.decode_on_device else RawImages(base)
        elif cfg.DATA.AUGMENT_ON == "loader":
            train_set = TwoViewDataset(base, build_train_transform(cfg.DATA.AUGMENT, cfg.DATA.IMAGE_SIZE),
                                       cfg.SEED, self.views)
        else:
            raise ConfigError(f"DATA.AUGMENT_ON {cfg.DATA.AUGMENT_ON!r}: choose loader (PIL, in the workers) or "
                              "device (batched tensors on the training device).")
        return train_set, ResumableBatchSampler(len(base), cfg.SOLVER.BATCH_SIZE, self.rank, self.world, cfg.SEED)

    def build_model(self, cfg: CfgNode):
        """(the objective: encoders, pool, sampler, schedule, on the device; the module the step calls: the
        objective, or DDP around it when distributed)."""
        dev = self.device
        objective = build_objective(cfg, dataset_size=self.dataset_size, global_batch=cfg.SOLVER.BATCH_SIZE)
        objective.to(dev)
        objective.place_state(dev)
        objective.to(memory_format=memory_format(cfg))
        if cfg.MODEL.COMPILE:
            compile_encoders(objective)
        model = objective
        if self.world > 1:
            seed_everything(cfg.SEED + self.rank)
            D.broadcast_buffers(objective)  # identical pools from the first step, whatever built them
            # broadcast_buffers=False: from then on banks/queues stay identical by construction (every rank
            # enqueues the same gathered keys); broadcasting a 1.28M-entry bank each step would dominate.
            model = torch.nn.parallel.DistributedDataParallel(
                objective, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False)
        return objective, model

    def build_optimizer(self, cfg: CfgNode, params: list) -> torch.optim.Optimizer:
        return build_optimizer(params, cfg.SOLVER)

    def build_lr_scheduler(self, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        """The per-iteration multiplier of ``SOLVER.SCHEDULE`` (with warm-up) over the full schedule's length."""
        s = cfg.SOLVER
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, build_lr_lambda(s.SCHEDULE, s.STEPS, s.GAMMA, self.iters_per_epoch * s.EPOCHS,
                                       int(s.WARMUP_EPOCHS * self.iters_per_epoch)))

    def build_hooks(self) -> list[Hook]:
        """The loop's concerns, in the order they run (override to add one)."""
        cfg = self.cfg
        self.writer = MetricsWriter(cfg, self.main)
        hooks: list[Hook] = [LossFeed()] if self.objective.schedule.observes == "loss" else []
        hooks.append(self.writer)
        metric = cfg.RING.ADAPTIVE_ACC_METRIC if self.objective.schedule.observes == "knn" else None
        if metric not in (None, "bank_1nn", "knn"):
            raise ConfigError(f"RING.ADAPTIVE_ACC_METRIC {metric!r}: choose bank_1nn (the authors': the test split's "
                              "1-NN against the training anchors, every epoch) or knn (the kNN monitor's).")
        if metric == "bank_1nn":
            if self.train_targets is None:
                raise ConfigError(f"RING.ADAPTIVE_ACC_METRIC bank_1nn needs the labels of DATA.TRAIN_SPLIT "
                                  f"{cfg.DATA.TRAIN_SPLIT!r}, which has none; use a labelled split or the knn metric.")
            hooks.append(BankNearestNeighbour(cfg, self.writer, self.train_targets, self.device))
        if cfg.KNN.ENABLED:
            hooks.append(KNNMonitor(cfg, self.writer, feeds_schedule=metric == "knn"))
        elif metric == "knn":
            raise ConfigError(f"RING.SCHEDULE {cfg.RING.SCHEDULE} with RING.ADAPTIVE_ACC_METRIC knn adapts to the kNN "
                              "monitor's accuracy; set KNN.ENABLED True.")
        return hooks + [PeriodicCheckpointer(cfg)]

    # -- checkpoints ---------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "config": self.cfg.dump(), "model": self.objective.state_dict(),
            "backbone_prefix": _backbone_prefix(self.objective),
            "optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
            "objective_extra": self.objective.extra_state(), "rng": rng_state(),
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "iter": self.iter,
            "world_size": self.world, "last_knn": self.last_knn, "metrics_so_far": self.writer.state_dict(),
        }

    def save(self, epoch_copy: int | None = None) -> None:
        if self.main:
            save_checkpoint(self.run_dir, self._state(), epoch_copy)
        self.saved_iter = self.iter
        D.barrier()

    def _resume(self) -> None:
        state = load_checkpoint(self.run_dir, map_location=self.device)
        saved = state["config"]
        for key in ("OBJECTIVE.NAME", "OBJECTIVE.ESTIMATOR", "MODEL.BACKBONE", "DATA.NAME"):
            a, b = get_key(self.cfg, key), get_key(CfgNode.load_cfg(saved), key)
            if a != b:
                raise CheckpointError(f"{self.run_dir}: the checkpoint was trained with {key}={b} but the config "
                                      f"says {a}; resume with the run's own config.yaml or start a new run directory.")
        if state["world_size"] != self.world:
            raise CheckpointError(f"{self.run_dir}: the checkpoint was written by {state['world_size']} processes "
                                  f"and this run has {self.world}; exact resumption needs the same number.")
        self.objective.load_state_dict(state["model"])
        self.objective.load_extra_state(state["objective_extra"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        set_rng_state(state["rng"])
        self.epoch, self.batch_in_epoch, self.iter = state["epoch"], state["batch_in_epoch"], state["iter"]
        self.last_knn = state.get("last_knn")
        self._metrics_so_far = state.get("metrics_so_far")  # the summary's running sums, for the writer
        if self.main:
            print(f"[ring-pretrain] resumed {self.run_dir} at epoch {self.epoch}, batch {self.batch_in_epoch}, "
                  f"iteration {self.iter}")

    # -- training ------------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        self.train_set.epoch = self.epoch
        self.batch_sampler.set_epoch(self.epoch, self.batch_in_epoch)
        nw = loader_workers(self.cfg.DATA.NUM_WORKERS, self.device)
        return DataLoader(self.train_set, batch_sampler=self.batch_sampler, num_workers=nw,
                          pin_memory=self.device.type == "cuda", persistent_workers=False,
                          prefetch_factor=4 if nw else None,
                          collate_fn=collate_encoded if self.decode_on_device else None)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:  # the empty second view of one-view objectives (IR, CMC)
            return x
        return x.to(self.device, non_blocking=True).contiguous(memory_format=memory_format(self.cfg))

    def loss_value(self) -> float:
        """This step's loss as a float: read from the device once per step, and only when asked."""
        if self._loss_float is None:
            self._loss_float = float(self._loss.detach())
        return self._loss_float

    def loss_tensor(self) -> torch.Tensor:
        """This step's loss, detached, where it was computed (nothing read on the host)."""
        return self._loss.detach()

    def loss_was_read(self) -> bool:
        return self._loss_float is not None

    def progress_epochs(self) -> float:
        return self.epoch + self.batch_in_epoch / self.iters_per_epoch

    def epoch_complete(self) -> bool:
        return self.batch_in_epoch == self.iters_per_epoch

    def _augment_on_device(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DATA.AUGMENT_ON device: both views from one copy of the uint8 batch, seeded by (seed, epoch, batch,
        rank, view), so that a resumed run draws what an uninterrupted one would have.  DATA.DECODE_ON device:
        ``images`` is a list of JPEG files' bytes, decoded here once for both views."""
        if self.decode_on_device:
            images = decode_batch(images, self.device)
        else:
            images = images.to(self.device, non_blocking=True)
        views = [self.device_augment(images, derive_seed(self.cfg.SEED, self.epoch, self.batch_in_epoch, self.rank, v))
                 .contiguous(memory_format=memory_format(self.cfg)) for v in range(self.views)]
        return views[0], views[1] if self.views == 2 else NO_VIEW

    def step(self, v1, v2, index) -> dict:
        """One optimizer step on one batch; returns the objective's stats."""
        self.objective.set_progress(self.iter)
        if self.device_augment is not None:
            v1, v2 = self._augment_on_device(v1)
        v1, v2, index = self._to_device(v1), self._to_device(v2), index.to(self.device)
        self.last_index = index
        with self.amp_context():
            loss, stats = self.model(v1, v2, index)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.lr_scheduler.step()
        self._loss, self._loss_float = loss, None
        self.iter, self.batch_in_epoch = self.iter + 1, self.batch_in_epoch + 1
        self.batch_images = len(v1) * self.world
        return stats

    def amp_context(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def train(self) -> dict:
        try:
            return self._train()
        finally:  # the run directory is free again for the next writer (a resume in this same process, say)
            if self._lock is not None:
                self._lock.release()

    def _train(self) -> dict:
        done = self.run_dir / "summary.json"
        if self.iter >= self.total_iters and done.exists():  # a finished run, resumed: report, rewrite nothing
            return json.loads(done.read_text())
        self.model.train()
        for h in self.hooks:
            h.before_train(self)
        while self.iter < self.total_iters and self.epoch < self.cfg.SOLVER.EPOCHS:
            batches, t_wait = iter(self._loader()), time.perf_counter()
            for v1, v2, index, _ in batches:
                self.data_wait = time.perf_counter() - t_wait  # the step waited this long for its batch
                stats = self.step(v1, v2, index)
                for h in self.hooks:
                    h.after_step(self, stats)
                if self.iter >= self.total_iters or self.epoch_complete():
                    break
                t_wait = time.perf_counter()
            if self.epoch_complete():
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                for h in self.hooks:
                    h.after_epoch(self)
            else:
                break  # stopped by SOLVER.MAX_ITERS mid-epoch
        for h in self.hooks:
            h.after_train(self)
        return self.write_summary()

    def write_summary(self) -> dict:
        cfg = self.cfg
        m = self.writer.summary_metrics()
        metrics = {"loss": m["loss"], "iters": self.iter, "epochs": self.epoch, "img_per_s": m["img_per_s"],
                   "seconds": m["seconds"]}
        if self.last_knn is not None:
            metrics["knn_top1"] = self.last_knn
        summary = None
        if self.main:
            summary = write_summary(self.run_dir, stage="pretrain", **provenance(cfg), metrics=metrics)
        D.barrier()
        return summary or {"metrics": metrics}


def compile_encoders(objective: torch.nn.Module) -> int:
    """MODEL.COMPILE: ``Module.compile()`` on every encoder (backbone + head) of the objective, in place, so
    that parameter names (and so checkpoints, exports and resumes) do not change.  Returns how many."""
    encoders = [m for m in objective.modules() if isinstance(m, Encoder)]
    for m in encoders:
        m.compile()
    return len(encoders)


def _backbone_prefix(objective: torch.nn.Module) -> str:
    target = objective.backbone
    for name, mod in objective.named_modules():
        if mod is target:
            return name + "."
    raise RuntimeError("the objective's backbone is not one of its submodules")
