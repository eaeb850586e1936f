"""torchrun-aware process-group helpers (nccl on CUDA, gloo on CPU); all are no-ops on one process."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(device_type: str) -> tuple[int, int, int]:
    """Initialise the default group when launched by torchrun; returns (rank, world_size, local_rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return get_rank(), get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


@torch.no_grad()
def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x from every rank along dim 0 (no gradient), in rank order."""
    if not is_dist():
        return x
    out = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands every rank the gradient of its own slice, summed over the ranks
    whose losses used it (an all-reduce of the gathered gradient, then this rank's slice)."""

    @staticmethod
    def forward(ctx, x):
        out = [torch.empty_like(x) for _ in range(get_world_size())]
        dist.all_gather(out, x.contiguous())
        ctx.rows = len(x)
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        r, n = get_rank(), ctx.rows
        return grad[r * n:(r + 1) * n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x from every rank along dim 0, in rank order, with gradients flowing back to each owner.

    With DDP's gradient averaging, the gradient then equals one process's gradient on the global batch:
    rank s's embeddings get the gradient of every rank's loss that used them as negatives."""
    if not is_dist():
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Every buffer (queues, memory banks, BatchNorm statistics) set to rank ``src``'s, once."""
    if not is_dist():
        return
    for b in module.buffers():
        dist.broadcast(b, src)


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_mean_tensor(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the ranks, as a tensor on ``t``'s device: nothing is read on the host."""
    if not is_dist():
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / get_world_size()


def broadcast_float(value: float | None, src: int = 0) -> float:
    """Rank ``src``'s value on every rank."""
    if not is_dist():
        return float(value)
    t = torch.tensor([value if value is not None else 0.0], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src)
    return float(t.item())


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
