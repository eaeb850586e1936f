"""Meta-Dataset few-shot evaluation (``ring-meta-dataset``) of every backbone on the section's sources, after
converting the offline ones (``ring-md-convert``) once per suite."""
from __future__ import annotations

from pathlib import Path

from transfer.tasks.base import TASK_REGISTRY, EvalContext, Row, Stage, TransferTask, check_estimators, py


@TASK_REGISTRY.register(name="meta_dataset")
class MetaDataset(TransferTask):
    name, order = "meta_dataset", 40
    # records: "" = OUT/md_records; convert: sources converted there first; optional: sources left out when their
    # data is not installed; seeds / estimators: [] = every pretraining seed / estimator (random init follows the
    # seeds); image_size: 0 = the run's own
    schema = {"enabled": True, "records": "", "convert": [], "optional": [], "max_per_class": 600, "seeds": [],
              "estimators": [],
              "sources": [], "episodes": 600, "protocol": "variable", "classifier": "ncc-cosine", "image_size": 0}
    tables = {"meta_dataset": "Meta-Dataset (accuracy %; ± 95 % CI over episodes for one seed, over seeds for several)"}

    @staticmethod
    def records(section, out: Path) -> Path:
        return Path(section["records"]) if section["records"] else out / "md_records"

    def check(self, section, where):
        check_estimators(section, where, self.name)

    def unavailable(self, section):
        gone = [s for s in section["optional"] if not _available(s)]
        section["convert"] = [s for s in section["convert"] if s not in gone]
        section["sources"] = [s for s in section["sources"] if s not in gone]
        return gone

    def prepare(self, section, out):
        records = self.records(section, out)
        return [Stage(f"convert {src}", py("meta_dataset.convert", src, "-o", records, "--max-per-class",
                                           section["max_per_class"]),
                      records / src / "dataset_spec.json", out / "logs" / f"convert_{src}.log", kind="convert", key=src)
                for src in section["convert"]]

    def stages(self, section, ctx: EvalContext) -> list[Stage]:
        if not (section["sources"] and self.applies(section, ctx)):
            return []
        md = ctx.dest / "meta_dataset"
        # episodes drawn with the backbone's seed: every backbone of one seed meets the same episodes (paired)
        cmd = py("meta_dataset.cli", *ctx.source(), "--records", self.records(section, ctx.out), "--sources",
                 *section["sources"], "--episodes", section["episodes"], "--protocol", section["protocol"],
                 "--classifier", section["classifier"], "--seed", ctx.seed, "-o", md, "--quiet",
                 *(["--image-size", section["image_size"]] if section["image_size"] else []), *ctx.opts)
        records = self.records(section, ctx.out)
        return [Stage(f"meta-dataset {ctx.tag}", cmd, md / "summary.json", ctx.dest / "meta_dataset.log",
                      kind=ctx.kind("meta_dataset"), key="meta_dataset" + (" baseline" if ctx.random_init else ""),
                      after=tuple(records / src / "dataset_spec.json" for src in section["convert"]))]

    def smoke(self, section, data):
        if not section["sources"]:
            return
        records = data / "md_records"
        if not records.exists():
            from meta_dataset.convert import CONVERTER_REGISTRY, write_source

            images, names = CONVERTER_REGISTRY.get("synthetic")(12, None)
            for src in section["sources"]:
                write_source(records, src, images, names)
        section.update(records=str(records), convert=[], optional=[], episodes=5, image_size=32)

    def rows(self, s):
        if s["stage"] != "meta_dataset":
            return []
        how = s.get("protocol", "") + ("" if s.get("protocol") in ("linear", "linear_halves") else ", " + s.get("classifier", ""))
        return [Row("meta_dataset", f"{src['source']} ({how})", src["accuracy"], src["ci95"])
                for src in s.get("sources", [])]


def _available(source: str) -> bool:
    if source == "fashion_mnist":
        from pretrain.data.idx import FASHION_MNIST_DEFAULT

        return Path(FASHION_MNIST_DEFAULT).is_dir()
    if source == "animal_mnist":
        import importlib.util

        return importlib.util.find_spec("animal_mnist") is not None
    return True
