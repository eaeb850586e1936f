"""Detectron2 on several CPU processes (gloo): the one place where ringnce reaches past Detectron2's public
API, because Detectron2 0.6 offers no CPU path for multi-process training.

- ``detectron2.engine.launch`` asserts CUDA, initialises NCCL and calls ``torch.cuda.set_device``; this
  launcher spawns the processes itself and initialises gloo instead.
- Detectron2 keeps the per-machine process group in a private global (``comm._LOCAL_PROCESS_GROUP``) that
  ``comm.get_local_rank()`` requires; it is set here as ``launch`` sets it.
- ``DefaultTrainer`` wraps the model with ``create_ddp_model``, which passes ``device_ids=[local rank]``;
  DDP rejects device ids for CPU modules, so that function is replaced, in the spawned processes only,
  by one that leaves them out.

Everything else (DDP wrapping, sharded training data, evaluator gathering) is Detectron2's own code path,
which is what a multi-process CPU run is for: exercising it before a cluster run.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def launch_cpu(main_func, num_processes: int, dist_url: str, args: tuple) -> None:
    mp.spawn(_worker, nprocs=num_processes, args=(main_func, num_processes, dist_url, args), daemon=False)


def _cpu_create_ddp_model(model, *, fp16_compression=False, **kwargs):
    from detectron2.utils import comm

    if comm.get_world_size() == 1:
        return model
    kwargs.pop("device_ids", None)
    return torch.nn.parallel.DistributedDataParallel(model, **kwargs)


def _worker(rank: int, main_func, world: int, dist_url: str, args: tuple) -> None:
    import detectron2.engine.defaults as defaults
    from detectron2.utils import comm

    dist.init_process_group("gloo", init_method=dist_url, world_size=world, rank=rank)
    comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world)))  # one machine: every rank is local
    defaults.create_ddp_model = _cpu_create_ddp_model
    comm.synchronize()
    main_func(*args)
