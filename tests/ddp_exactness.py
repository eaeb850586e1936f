"""One optimizer step of an objective on a fixed global batch, with or without DDP (shared by the
one-process reference in tests/test_ddp.py and the 2-process tests/ddp_worker.py)."""
import torch

from pretrain.config import load_config
from pretrain.contrastive.objectives import build_objective

# "ring+adaptive": the ring sized on the device (the loss-adaptive schedule's path: draws or a mask)
COMBINATIONS = [(o, e) for o in ("ir", "cmc", "moco", "simclr") for e in ("nce", "ring", "ball", "ring+adaptive")]
GLOBAL_BATCH, POOL = 8, 64


def global_batch():
    g = torch.Generator().manual_seed(3)
    x1, x2 = torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=g), torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=g)
    return x1, x2, (torch.arange(GLOBAL_BATCH) * 7) % POOL


def one_step(name: str, est: str, x1, x2, index, ddp: bool):
    """(parameters, pools) after one SGD step; BatchNorm in eval mode so that per-device statistics do not
    enter the comparison."""
    est, _, schedule = est.partition("+")
    cfg = load_config(None, ["OBJECTIVE.NAME", name, "OBJECTIVE.ESTIMATOR", est, "RING.SCHEDULE", schedule or "constant",
                             "MODEL.OUT_DIM", "16",
                             "MODEL.SMALL_STEM", "False", "MODEL.WIDTH", "16", "CMC.WIDTH", "8",
                             "MOCO.QUEUE_SIZE", str(POOL), "BANK.NUM_NEGATIVES", "15", "RING.OUTER", "0.5",
                             "DATA.AUGMENT", "ir"])
    torch.manual_seed(0)
    obj = build_objective(cfg, dataset_size=POOL, global_batch=GLOBAL_BATCH)
    if schedule:
        obj.schedule.load_state_dict({"value": 0.75, "history": []})
    obj.set_progress(0)
    for m in obj.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    model = torch.nn.parallel.DistributedDataParallel(obj, broadcast_buffers=False) if ddp else obj
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    loss, _ = model(x1, x2, index)
    opt.zero_grad()
    loss.backward()
    opt.step()
    params = {k: v.detach().clone() for k, v in obj.named_parameters() if v.requires_grad}
    pools = {k: v.clone() for k, v in obj.named_buffers() if "bank" in k or "queue.keys" in k}
    return params, pools
