"""Same config, same numbers: a digest of short pretraining runs, to compare two versions of the code.

    python tools/refactor_identity.py -o /tmp/before.json     # at one commit
    python tools/refactor_identity.py -o /tmp/after.json      # at another
    python tools/refactor_identity.py --compare /tmp/before.json /tmp/after.json

Each run is IR, CMC, MoCo or SimCLR with NCE or Ring for a few iterations on the built-in shapes (the
kNN monitor on), through the ``ring-pretrain`` command of whichever tree is on ``sys.path``.  The digest
is a SHA-256 of every tensor of the final checkpoint's model and objective state (weights, buffers,
queue/banks) in key order, plus the logged losses and the kNN accuracy: equal digests mean bit-identical
weights.  It reads the checkpoint with ``torch.load`` alone, so it does not depend on the code it checks.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

RUNS = {"ir": "cpu_small_ir", "cmc": "cpu_small_cmc", "moco": "cpu_small", "simclr": "cpu_small_simclr"}
SHORT = ["SOLVER.EPOCHS", "1", "SOLVER.BATCH_SIZE", "32", "DATA.SYNTHETIC_SIZE", "192", "DATA.NUM_WORKERS", "0",
         "MOCO.QUEUE_SIZE", "128", "BANK.NUM_NEGATIVES", "127", "KNN.K", "5", "KNN.MAX_TRAIN", "64",
         "KNN.MAX_TEST", "32", "LOG.TENSORBOARD", "False", "LOG.PROGRESS", "False", "LOG.PERIOD", "1",
         "RING.OUTER", "0.5", "SEED", "3"]


def digest(run: Path) -> dict:
    state = torch.load(run / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    n = 0
    for key in sorted(state["model"]):
        t = state["model"][key]
        if torch.is_tensor(t):
            h.update(key.encode())
            h.update(t.detach().contiguous().cpu().numpy().tobytes())
            n += 1
    losses = [json.loads(line).get("loss") for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    return {"tensors": n, "sha256": h.hexdigest(), "losses": [x for x in losses if x is not None],
            "knn_top1": summary["metrics"].get("knn_top1")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output")
    p.add_argument("--compare", nargs=2)
    args = p.parse_args()
    if args.compare:
        a, b = (json.loads(Path(f).read_text()) for f in args.compare)
        same = True
        for k in a:
            eq = a[k] == b.get(k)
            same &= eq
            print(f"{k:12s} {'identical' if eq else 'DIFFERENT'}  sha256 {a[k]['sha256'][:16]} / "
                  f"{b.get(k, {}).get('sha256', '-')[:16]}  {a[k]['tensors']} tensors, last loss {a[k]['losses'][-1]:.6f}, "
                  f"kNN {a[k]['knn_top1']}")
        print("all identical" if same else "differences found")
        return 0 if same else 1
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for obj, cfg in RUNS.items():
            for est in ("nce", "ring"):
                run = Path(tmp) / f"{obj}_{est}"
                subprocess.run([sys.executable, "-m", "pretrain.cli", "-c", cfg, "-o", str(run),
                                "OBJECTIVE.ESTIMATOR", est, *SHORT], check=True, stdout=subprocess.DEVNULL)
                out[f"{obj}_{est}"] = digest(run)
                print(f"{obj}_{est}: {out[f'{obj}_{est}']['sha256'][:16]}", flush=True)
    text = json.dumps(out, indent=1)
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
