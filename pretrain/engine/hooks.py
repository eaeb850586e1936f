"""The pretraining loop's concerns, one small class each (as Detectron2's trainer hooks).

A hook sees the ``Trainer`` and is called at four points: ``before_train``, ``after_step`` (after the
optimizer step; ``trainer.iter`` already counts it), ``after_epoch`` (a full epoch ended; ``trainer.epoch``
already counts it) and ``after_train`` (the loop ended: finished, or stopped by SOLVER.MAX_ITERS).
Hooks run in the order the trainer lists them; at an epoch end the kNN monitor (``evaluation/knn.py``) runs
before the checkpointer, so the checkpoint records its result.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time

from tqdm import tqdm

from pretrain import distributed as D
from pretrain.common import warn_once
from pretrain.io import plain


class Hook:
    def before_train(self, trainer) -> None:
        pass

    def after_step(self, trainer, stats: dict) -> None:
        pass

    def after_epoch(self, trainer) -> None:
        pass

    def after_train(self, trainer) -> None:
        pass


class LossFeed(Hook):
    """Feeds the (rank-averaged) loss to a schedule that adapts to it, every step, as a device tensor: the
    schedule moves the ring on the device and nothing waits for the loss."""

    def after_step(self, trainer, stats):
        trainer.objective.observe(D.all_reduce_mean_tensor(trainer.loss_tensor()))


class MetricsWriter(Hook):
    """Every LOG.PERIOD iterations (and at the last): one line of metrics.jsonl, TensorBoard scalars and
    the progress bar, and the estimator's warning about them (``Estimator.warn``, once per run); keeps the
    mean of the losses it read, the images and the seconds for the summary (``state_dict``: in every
    checkpoint, so a resumed run's summary covers the whole run)."""

    def __init__(self, cfg, main: bool):
        self.period, self.main, self.cfg = cfg.LOG.PERIOD, main, cfg
        self.tb, self.bar = None, None
        self.loss_sum, self.loss_n, self.images = 0.0, 0, 0
        self.seconds_before = 0.0  # training seconds of earlier sessions of this run
        self.warned = False

    def before_train(self, trainer):
        cfg = self.cfg
        if self.main and cfg.LOG.TENSORBOARD:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(trainer.run_dir / "tb"), purge_step=trainer.iter)
        self.bar = tqdm(total=trainer.total_iters, initial=trainer.iter, dynamic_ncols=True,
                        desc=f"pretrain {cfg.OBJECTIVE.NAME}-{cfg.OBJECTIVE.ESTIMATOR}",
                        disable=not (self.main and cfg.LOG.PROGRESS))
        self.t_start = self.t_window = time.perf_counter()
        self.n_window, self.steps_window, self.wait_window = 0, 0, 0.0

    def after_step(self, trainer, stats):
        n = trainer.batch_images
        self.n_window, self.images = self.n_window + n, self.images + n
        self.steps_window, self.wait_window = self.steps_window + 1, self.wait_window + trainer.data_wait
        log_now = trainer.iter % self.period == 0 or trainer.iter == trainer.total_iters
        if log_now or trainer.loss_was_read():  # the summary's mean loss: every loss read, none extra
            self.loss_sum, self.loss_n = self.loss_sum + trainer.loss_value(), self.loss_n + 1
        if log_now:
            now = time.perf_counter()
            ips = self.n_window / max(now - self.t_window, 1e-9)
            # data_wait_s: per step, the time spent waiting for the loader (the rest of step_s is the step)
            step_s, wait_s = (now - self.t_window) / self.steps_window, self.wait_window / self.steps_window
            self.t_window, self.n_window, self.steps_window, self.wait_window = now, 0, 0, 0.0
            rec = dict(iter=trainer.iter, epoch=trainer.progress_epochs(), loss=trainer.loss_value(),
                       lr=trainer.optimizer.param_groups[0]["lr"], img_per_s=ips, step_s=step_s, data_wait_s=wait_s,
                       **{k: plain(v) for k, v in stats.items()})
            trainer.log.write(**rec)
            warn = trainer.objective.estimator.warn
            message = warn(rec) if warn is not None and self.main and not self.warned else None
            if message:
                self.warned = True
                warn_once(f"{message} (iteration {trainer.iter}; warned once per run)")
            self.scalars("train", rec, trainer.iter)
            self.bar.set_postfix(loss=f"{rec['loss']:.3f}", img_s=f"{ips:.1f}",
                                 **({"o": f"{stats['outer']:.3f}"} if "outer" in stats else {}))
        self.bar.update(1)

    def scalars(self, group: str, rec: dict, it: int) -> None:
        if self.tb:
            for k, v in rec.items():
                if k != "iter":
                    self.tb.add_scalar(f"{group}/{k}", v, it)

    def after_train(self, trainer):
        self.bar.close()
        if self.tb:
            self.tb.close()

    def state_dict(self) -> dict:
        started = getattr(self, "t_start", None)
        seconds = self.seconds_before + (time.perf_counter() - started if started is not None else 0.0)
        return {"loss_sum": self.loss_sum, "loss_n": self.loss_n, "images": self.images, "seconds": seconds}

    def load_state_dict(self, state: dict) -> None:
        self.loss_sum, self.loss_n, self.images = state["loss_sum"], state["loss_n"], state["images"]
        self.seconds_before = state["seconds"]

    def summary_metrics(self) -> dict:
        elapsed = self.state_dict()["seconds"]
        return {"loss": self.loss_sum / max(1, self.loss_n), "img_per_s": self.images / max(elapsed, 1e-9),
                "seconds": elapsed}


class PeriodicCheckpointer(Hook):
    """checkpoint_last.pth every CHECKPOINT.PERIOD_ITERS iterations within an epoch, at every epoch end, and
    where SOLVER.MAX_ITERS stops mid-epoch; a kept copy checkpoint_eNNNN.pth every CHECKPOINT.KEEP_EVERY
    epochs and after the last epoch (the retention policy: disk per run stays bounded)."""

    def __init__(self, cfg):
        self.period, self.keep_every, self.epochs = cfg.CHECKPOINT.PERIOD_ITERS, cfg.CHECKPOINT.KEEP_EVERY, \
            cfg.SOLVER.EPOCHS

    def after_step(self, trainer, stats):
        if not trainer.epoch_complete() and trainer.iter % self.period == 0:
            trainer.save()

    def after_epoch(self, trainer):
        keep = trainer.epoch == self.epochs or (self.keep_every > 0 and trainer.epoch % self.keep_every == 0)
        trainer.save(epoch_copy=trainer.epoch if keep else None)

    def after_train(self, trainer):
        if trainer.batch_in_epoch:  # stopped by SOLVER.MAX_ITERS mid-epoch
            trainer.save()


class StopBetweenSteps(Hook):
    """Ctrl-C (SIGINT) stops the run at the end of the current step, after its checkpoint if one was due, as
    a ``KeyboardInterrupt`` from the loop itself: Python delivers a signal at any bytecode, and one landing in
    an object's finalizer is printed and swallowed (the run went on as if never interrupted).  A second Ctrl-C
    stops at once.  ``installed()`` holds the handler for the ``with`` block (the main thread only)."""

    def __init__(self):
        self.asked = False

    def _on_sigint(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def after_step(self, trainer, stats):
        if self.asked:
            raise KeyboardInterrupt
