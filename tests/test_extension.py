"""Extension is one file: an estimator with its own setting, and a transfer task, each added from one new
module (here written to a temporary folder and loaded through $RINGNCE_PLUGINS, exactly as a user's module in
their own repository would be), with no other file of the project edited.

Both run in fresh interpreters (the registries are process-wide), through the real commands."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.conftest import ROOT, TINY, opts_with

ESTIMATOR_MODULE = '''
"""toy_tempered: InfoNCE over uniform negatives with the negatives' logits shifted by TOY.SHIFT (a setting of
its own, declared where it registers)."""
from pretrain.contrastive.estimators import ESTIMATOR_REGISTRY, Estimator, contrastive_loss
from pretrain.contrastive.samplers import SAMPLER_REGISTRY


@ESTIMATOR_REGISTRY.register(name="toy_tempered", config={"TOY": {"SHIFT": 0.25}})
def build(cfg):
    shift = float(cfg.TOY.SHIFT)
    return Estimator("toy_tempered", SAMPLER_REGISTRY.get("uniform")(cfg),
                     lambda neg, t: contrastive_loss(neg.pos, neg.masked_logits() + shift, t))
'''

TASK_MODULE = '''
"""weight_norm: a transfer task that scores a backbone by the L2 norm of its weights (a stand-in for any
evaluation: its own command, stages, smoke form, table and rows)."""
import sys
from pathlib import Path

from transfer.tasks import TASK_REGISTRY, Row, Stage, TransferTask


@TASK_REGISTRY.register(name="weight_norm")
class WeightNorm(TransferTask):
    name, order = "weight_norm", 90
    schema = {"enabled": True, "scale": 1.0}
    tables = {"weight_norm": "Weight norm of the backbone"}

    def stages(self, section, ctx):
        out = ctx.dest / "weight_norm"
        # its command: main() below (run through an import, so that the module registers once per process)
        cmd = [sys.executable, "-c", f"import {__name__}; {__name__}.main()", ctx.run, out, section["scale"],
               *ctx.init_flag]
        return [Stage(f"weight-norm {ctx.tag}", list(map(str, cmd)),
                      out / "summary.json", ctx.dest / "weight_norm.log", kind=ctx.kind("weight_norm"),
                      key=ctx.config)]

    def smoke(self, section, data):
        section["scale"] = 0.5

    def rows(self, s):
        return [Row("weight_norm", "L2 norm", s["metrics"]["norm"])] if s["stage"] == "weight_norm" else []


def main():
    import torch

    from pretrain.config import provenance
    from pretrain.evaluation.pretrained import load_backbone
    from pretrain.io import write_summary

    run, out, scale, random_init = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), "--random-init" in sys.argv
    cfg, bb = load_backbone(run, random_init)
    norm = scale * float(torch.sqrt(sum((p.double() ** 2).sum() for p in bb.parameters())))
    write_summary(out, stage="weight_norm", **provenance(cfg, random_init), metrics={"norm": norm})
'''


def _env(tmp_path, module: str, text: str) -> dict:
    (tmp_path / "plugins").mkdir(exist_ok=True)
    (tmp_path / "plugins" / f"{module}.py").write_text(textwrap.dedent(text))
    env = {**os.environ, "RINGNCE_PLUGINS": module, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return env


def _run(args, env, cwd):
    p = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout


@pytest.mark.timeout(900)
def test_an_estimator_from_one_module_trains_pairs_and_smokes(tmp_path):
    env = _env(tmp_path, "toy_estimator", ESTIMATOR_MODULE)
    # one epoch of 2 steps, then the kNN monitor (a table row)
    short = opts_with(TINY, **{"SOLVER.EPOCHS": 1, "DATA.SYNTHETIC_SIZE": 16, "BANK.NUM_NEGATIVES": 15, "SEED": 0})
    # its setting is a config key like any other, and it reaches the loss
    probe = ("import torch; from pretrain.config import load_config; "
             "from pretrain.contrastive.estimators import Negatives, build_estimator; "
             "neg = Negatives(torch.zeros(2, 3), torch.tensor([0.5, 0.2]), torch.tensor([[0.1, 0.3], [0.4, 0.0]]), "
             "torch.zeros(2, 3), None); "
             "print(*(float(build_estimator(load_config(None, ['OBJECTIVE.ESTIMATOR', 'toy_tempered', 'TOY.SHIFT', s]))"
             ".loss(neg, 0.5)) for s in ('0.0', '0.25')))")
    plain, shifted = map(float, _run(["-c", probe], env, tmp_path).split())
    expect = [torch.logsumexp(torch.tensor([p, *n]) / 0.5 + torch.tensor([0, shift / 0.5, shift / 0.5]), 0) - p / 0.5
              for shift in (0.0, 0.25) for p, n in (((0.5), (0.1, 0.3)), ((0.2), (0.4, 0.0)))]
    assert plain == pytest.approx(float(sum(expect[:2]) / 2), rel=1e-5)
    assert shifted == pytest.approx(float(sum(expect[2:]) / 2), rel=1e-5)
    # it trains under every objective
    for obj in ("ir", "cmc", "moco", "simclr"):
        run = tmp_path / "runs" / f"{obj}_toy_tempered_s0"
        _run(["-m", "pretrain.cli", "-o", str(run), "OBJECTIVE.NAME", obj, "OBJECTIVE.ESTIMATOR", "toy_tempered",
              *short], env, tmp_path)
        s = json.loads((run / "summary.json").read_text())
        assert s["estimator"] == "toy_tempered" and s["config"]["TOY.SHIFT"] == "0.25" and s["metrics"]["iters"] == 2
    # it pairs against NCE in ring-results (its own setting dropped from the pairing, as RING.* is for Ring)
    _run(["-m", "pretrain.cli", "-o", str(tmp_path / "runs" / "moco_nce_s0"), *short], env, tmp_path)
    tables = _run(["-m", "transfer.results", str(tmp_path / "runs")], env, tmp_path)
    assert "| moco-toy_tempered" in tables and "Δ moco-toy_tempered − nce" in tables
    assert "Δ ir-toy_tempered" not in tables  # no IR NCE run to pair with
    # and --smoke runs it although the suite does not name it
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ndevice: cpu\npretrain:\n  config: cpu_small\n  estimators: [nce]\n"
                     "lincls:\n  enabled: false\ndetection:\n  enabled: false\nmeta_dataset:\n  enabled: false\n")
    dry = _run(["-m", "transfer.suite", str(suite), "--smoke", "--dry-run", "-o", str(tmp_path / "smoke")], env, tmp_path)
    assert "pretrain moco-toy_tempered seed 0" in dry and "pretrain moco-ring seed 0" in dry


@pytest.mark.timeout(900)
def test_a_transfer_task_from_one_module_runs_in_the_suite_smoke_and_tables(tmp_path):
    env = _env(tmp_path, "toy_task", TASK_MODULE)
    suite = tmp_path / "s.yaml"
    tiny = opts_with(TINY, **{"SOLVER.MAX_ITERS": 2, "KNN.ENABLED": "False"})
    suite.write_text(json.dumps({
        "name": "s", "device": "cpu",
        "pretrain": {"config": "cpu_small", "estimators": ["nce"], "seeds": [0], "overrides": tiny},
        "lincls": {"enabled": False}, "detection": {"enabled": False}, "meta_dataset": {"enabled": False},
        "weight_norm": {"scale": 2.0}}))
    out = _run(["-m", "transfer.suite", str(suite), "-o", str(tmp_path / "out"), "--no-progress"], env, tmp_path)
    assert "## Weight norm of the backbone" in out and "Δ moco-nce − random init" in out
    s = json.loads((tmp_path / "out/baselines/default/rgb_random_init_s0/weight_norm/summary.json").read_text())
    assert s["method"] == "random_init" and s["metrics"]["norm"] > 0
    # its schema is checked like the built-in sections
    bad = tmp_path / "bad.yaml"
    bad.write_text("weight_norm:\n  scael: 2\n")
    p = subprocess.run([sys.executable, "-m", "transfer.suite", str(bad), "--dry-run"], env=env, cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "unknown key 'weight_norm.scael'" in p.stderr
    # --smoke rewrites its section by its own rule
    dry = _run(["-m", "transfer.suite", str(suite), "--smoke", "--dry-run", "-o", str(tmp_path / "sm")], env, tmp_path)
    assert "weight-norm moco-nce seed 0" in dry and " 0.5" in dry
