"""A training step that never waits for the device: no operator that forces a host synchronisation on CUDA
runs inside an objective's step (forward, backward, optimizer step), checked on CPU with a dispatch mode
that fails on them."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pretrain.config import load_config
from pretrain.contrastive.estimators import estimator_names
from pretrain.contrastive.objectives import OBJECTIVE_REGISTRY, build_objective

aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.is_nonzero, aten.item}


class FailOnHostSync(TorchDispatchMode):
    """.item()/int()/float() (_local_scalar_dense), nonzero, masked_select and boolean-mask indexing."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in SYNCING:
            raise AssertionError(f"host sync: {func}")
        if packet in (aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_):
            indices = args[1] if len(args) > 1 else kwargs.get("indices", [])
            if any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in indices):
                raise AssertionError(f"boolean-mask indexing: {func}")
        return func(*args, **kwargs)


def test_the_detector_catches_each_kind_of_sync():
    x = torch.randn(4)
    for syncing in (lambda: x.sum().item(), lambda: float(x[0]), lambda: x[x > 0], lambda: x.nonzero(),
                    lambda: torch.masked_select(x, x > 0)):
        with pytest.raises(AssertionError, match="host sync|boolean-mask"), FailOnHostSync():
            syncing()


OBJECTIVES, ESTIMATORS = OBJECTIVE_REGISTRY.names(), estimator_names()
# fast: every objective with NCE and Ring, DCL/HCL/MoCHi once on a queue and MoCHi on a bank; every other
# objective x registered estimator under -m slow
FAST = [(o, e) for o in OBJECTIVES for e in ("nce", "ring")] + [("moco", e) for e in ("dcl", "hcl", "mochi")] + \
    [("ir", "mochi")]
COMBOS = [pytest.param(o, e, "constant", marks=[] if (o, e) in FAST else [pytest.mark.slow])
          for o in OBJECTIVES for e in ESTIMATORS]
# the adaptive schedule moves the ring with the loss on the device: a bank (draws) and a queue (mask) by
# default, every objective with each ring estimator under -m slow
ADAPTIVE_FAST = [("ir", "ring"), ("moco", "ring")]
COMBOS += [pytest.param(o, e, "adaptive", marks=[] if (o, e) in ADAPTIVE_FAST else [pytest.mark.slow])
           for o in OBJECTIVES for e in ("ring", "ball", "ring_hcl", "ring_mochi")]


@pytest.mark.parametrize("name,est,schedule", COMBOS)
def test_an_objective_step_has_no_host_sync(name, est, schedule):
    cfg = load_config(None, ["OBJECTIVE.NAME", name, "OBJECTIVE.ESTIMATOR", est, "RING.SCHEDULE", schedule,
                             "RING.ADAPTIVE_WINDOW", "2", "MODEL.OUT_DIM", "16",
                             "MODEL.SMALL_STEM", "False", "MODEL.WIDTH", "16", "CMC.WIDTH", "8", "MOCO.QUEUE_SIZE", "64",
                             "BANK.NUM_NEGATIVES", "15", "RING.OUTER", "0.5",
                             "MOCHI.NUM_HARDEST", "8", "MOCHI.NUM_MIX", "8", "MOCHI.NUM_QUERY_MIX", "4"])
    torch.manual_seed(0)
    obj = build_objective(cfg, dataset_size=64, global_batch=8)
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    x1, x2, index = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16), torch.arange(8)
    outer = []
    if schedule == "adaptive":  # from mid-way, so that o can move either way (at 1 a rising loss holds it)
        obj.schedule.load_state_dict({"value": 0.75, "history": []})
    for step in range(3):  # later steps run with the optimizer's momentum buffers (and o moved) in place
        with FailOnHostSync():
            obj.set_progress(step)
            loss, stats = obj(x1, x2, index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if obj.schedule.observes == "loss":  # what the engine's LossFeed hook does after each step
                obj.observe(loss.detach())
        outer.append(float(obj.outer) if obj.sampler.conditional else None)
    assert torch.isfinite(loss)
    if schedule == "adaptive":  # it really ran on a device tensor, and it moved
        assert isinstance(obj.outer, torch.Tensor) and outer[0] == 0.75 and len(set(outer)) > 1
