"""kNN on frozen features: the pretraining run's kNN monitor (its summary's ``knn_top1``) and, when enabled,
``ring-knn`` of every backbone (its random-init twin included) with the KNN.* settings."""
from __future__ import annotations

from transfer.tasks.base import TASK_REGISTRY, EvalContext, Row, Stage, TransferTask, check_overrides, py
from transfer.tasks.linear import LINEAR_TABLE

SMOKE = ["KNN.K", 5, "KNN.MAX_TRAIN", 16, "KNN.MAX_TEST", 8]


@TASK_REGISTRY.register(name="knn")
class KNN(TransferTask):
    name, order = "knn", 20
    schema = {"enabled": False, "overrides": []}  # the monitor's rows come with every pretraining run anyway
    tables = LINEAR_TABLE

    def check(self, section, where):
        check_overrides(section["overrides"], where, "knn.overrides")

    def stages(self, section, ctx: EvalContext) -> list[Stage]:
        out = ctx.dest / "knn"
        return [Stage(f"knn {ctx.tag}", py("pretrain.knn", *ctx.source(), "-o", out, *ctx.opts, *section["overrides"]),
                      out / "summary.json", ctx.dest / "knn.log", kind=ctx.kind("knn"), key=ctx.config + " knn")]

    def smoke(self, section, data):
        section["overrides"] = [*section["overrides"], *SMOKE]

    def rows(self, s):
        m = s["metrics"]
        if s["stage"] == "pretrain" and "knn_top1" in m:
            return [Row("linear", f"{s['dataset']} (kNN monitor)", m["knn_top1"])]
        if s["stage"] == "knn" and "top1" in m:
            return [Row("linear", f"{s['dataset']} (kNN, k={s.get('k', '?')})", m["top1"])]
        return []
