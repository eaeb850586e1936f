"""The linear probe (``ring-lincls``) of every backbone, one column per dataset and protocol."""
from __future__ import annotations

from transfer.tasks.base import TASK_REGISTRY, EvalContext, Row, Stage, TransferTask, check_overrides, py

LINEAR_TABLE = {"linear": "Frozen-backbone classification (top-1 %): linear probe and kNN monitor"}
SMOKE = ["LINCLS.EPOCHS", 1, "LINCLS.BATCH_SIZE", 8, "LINCLS.MAX_TRAIN", 16, "LINCLS.MAX_TEST", 8]


@TASK_REGISTRY.register(name="lincls")
class LinearProbe(TransferTask):
    name, order = "lincls", 10
    schema = {"enabled": True, "overrides": []}
    tables = LINEAR_TABLE
    evaluation_keys = ("LINCLS.",)  # the probe's own settings: part of its column, not of the row

    def check(self, section, where):
        check_overrides(section["overrides"], where, "lincls.overrides")

    def stages(self, section, ctx: EvalContext) -> list[Stage]:
        lin = ctx.dest / "lincls"
        return [Stage(f"lincls {ctx.tag}", py("pretrain.lincls", *ctx.source(), "-o", lin, *ctx.opts,
                                              *section["overrides"]),
                      lin / "summary.json", ctx.dest / "lincls.log", kind=ctx.kind("lincls"), key=ctx.config)]

    def smoke(self, section, data):
        section["overrides"] = [*section["overrides"], *SMOKE]

    def rows(self, s):
        if s["stage"] != "lincls" or "top1" not in s["metrics"]:
            return []
        protocol = {"cached_features": "cached"}.get(s.get("protocol"), s.get("protocol", "cached"))
        rows = [Row("linear", f"{s['dataset']} ({protocol} protocol)", s["metrics"]["top1"])]
        if "top1_best" in s["metrics"]:  # MoCo's protocol: also its best epoch, chosen on the test split
            rows.append(Row("linear", f"{s['dataset']} ({protocol} protocol, best epoch)", s["metrics"]["top1_best"]))
        return rows
