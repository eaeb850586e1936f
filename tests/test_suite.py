import json

import pytest
import yaml

from tests.conftest import TINY
from transfer.suite import SuiteError, load_suite, main as suite_main, plan

TINY_PRETRAIN = [v for v in TINY if v not in ("DATA.NUM_WORKERS", "0")] + ["SOLVER.MAX_ITERS", 2, "KNN.ENABLED",
                                                                            False]


def _tiny_suite(tmp_path, **changes):
    suite = {
        "name": "tiny", "device": "cpu",
        "pretrain": {"config": "cpu_small", "objectives": ["moco"], "estimators": ["nce", "ring"], "seeds": [0],
                     "overrides": TINY_PRETRAIN},
        "random_init": True,
        "lincls": {"overrides": ["LINCLS.EPOCHS", 1]},
        "detection": {"tasks": [{"name": "mask", "config": "cpu/scenes_mask_rcnn_R_18_FPN.yaml",
                                 "overrides": ["SOLVER.MAX_ITER", 2, "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", 1,
                                               "DATALOADER.NUM_WORKERS", 0]}]},
        "meta_dataset": {"convert": ["synthetic"], "max_per_class": 12, "sources": ["synthetic"], "episodes": 5,
                         "image_size": 16},
    }
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            suite[section][sub] = value
        else:
            suite[section] = value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_suite_runs_then_resumes_by_skipping(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path, out = _tiny_suite(tmp_path), tmp_path / "out"
    assert suite_main([str(path), "-o", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for section in ("linear probe and kNN", "Detectron2 transfer", "Meta-Dataset"):
        assert section in text
    assert "moco-ring" in text and "Δ moco-ring − nce" in text and "Δ moco-nce − random init" in text
    assert (out / "results" / "tables.md").exists()
    det = json.loads((out / "pretrain/default/moco_ring_s0/det_mask/summary.json").read_text())
    assert det["method"] == "moco" and det["estimator"] == "ring" and "bbox/AP" in det["metrics"]
    # the random-init baseline of every evaluation: the run's architecture, untrained, at the run's seed
    base = out / "baselines/default/rgb_random_init_s0"
    for stage in ("lincls", "det_mask", "meta_dataset"):
        s = json.loads((base / stage / "summary.json").read_text())
        assert s["method"] == "random_init" and s["seed"] == 0 and s["config"]["MODEL.BACKBONE"] == "resnet18"
    tables = (out / "results" / "tables.md").read_text()
    for section in tables.split("## ")[1:]:
        assert "| random init" in section, section[:60]
    # a number, not only a label: the moco-ring row's linear-probe cell is its lincls summary's top-1 (n=1)
    top1 = json.loads((out / "pretrain/default/moco_ring_s0/lincls/summary.json").read_text())["metrics"]["top1"]
    ring_row = next(line for line in tables.splitlines() if line.startswith("| moco-ring "))
    assert f"{top1:.2f}" in ring_row
    # a second run reuses everything
    assert suite_main([str(path), "-o", str(out), "--no-progress"]) == 0
    again = capsys.readouterr().out
    n = len(plan(load_suite(path)[0], out))
    assert f"{n} stages, {n} already complete" in again and "done:" not in again


@pytest.mark.slow  # by default: the half-done pretraining stage below, and the full suite's rerun above
def test_interrupted_suite_resumes_where_it_stopped(tmp_path, capsys):
    path, out = _tiny_suite(tmp_path, detection__enabled=False, meta_dataset__enabled=False), tmp_path / "out"
    stages = plan(load_suite(path)[0], out)
    assert suite_main([str(path), "-o", str(out), "--no-progress"]) == 0
    stages[-2].done.unlink()  # as if the suite had been stopped before this stage
    capsys.readouterr()
    assert suite_main([str(path), "-o", str(out), "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert f"{len(stages) - 1} already complete" in again and again.count("done:") == 1


def test_typo_and_failed_stage_are_clear(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  estimater: [ring]\n")
    with pytest.raises(SuiteError, match="unknown key 'pretrain.estimater'.*pretrain.estimators"):
        load_suite(bad)
    assert suite_main(["no_such_suite"]) == 2
    assert "does not exist" in capsys.readouterr().err
    path = _tiny_suite(tmp_path, detection__enabled=False, meta_dataset__enabled=False,
                       pretrain__overrides=TINY_PRETRAIN + ["DATA.NAME", "cifar10", "DATA.ROOT", str(tmp_path / "no")])
    out = tmp_path / "out"
    assert suite_main([str(path), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "stage 'pretrain moco-nce seed 0' failed" in err and "cifar-10-batches-py" in err and "pretrain.log" in err


def test_detection_stages_resume_from_their_last_checkpoint(tmp_path):
    """Every Detectron2 stage runs with --resume: a rerun continues from last_checkpoint (and a fresh one, with
    no checkpoint yet, starts from MODEL.WEIGHTS)."""
    suite, _ = load_suite("paper_imagenet")
    # 4 tasks x (4 pretraining runs + the random-init baseline that MoCo and IR share: one RGB ResNet-50)
    det = [s for s in plan(suite, tmp_path) if "transfer.detection.train_net" in s.cmd]
    assert len(det) == 4 * 5 and all("--resume" in s.cmd for s in det)
    assert sum("rgb_random_init_s0" in str(s.done) for s in det) == 4
    assert all(s.cmd[s.cmd.index("-o") + 1] == str(s.done.parent) for s in det)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["paper_imagenet", "paper_cifar"])
def test_gpu_suites_run_every_distinct_stage_in_smoke_mode(tmp_path, name):
    """`ring-suite NAME --smoke`: torchrun with 2 gloo processes, Detectron2 with 2 gloo processes, tiny files
    in each dataset's real format; every distinct stage completes."""
    import json

    from transfer.smoke import distinct, make_smoke

    out = tmp_path / name
    assert suite_main([name, "--smoke", "-o", str(out), "--no-progress"]) == 0
    suite, _ = load_suite(name)
    stages = distinct(plan(make_smoke(suite, out), out))
    assert stages and all(s.done.exists() for s in stages)
    kinds = {s.kind for s in stages}
    assert {"pretrain", "lincls"} <= kinds and (name == "paper_cifar") == ("baseline" in kinds)
    for s in stages:
        if s.kind == "pretrain":
            assert "--nproc_per_node" in s.cmd and s.cmd[s.cmd.index("--nproc_per_node") + 1] == "2"
        if s.kind == "detection":
            assert s.cmd[s.cmd.index("--num-gpus") + 1] == "2"
            assert "World size: 2" in (s.done.parent / "log.txt").read_text()
            assert json.loads(s.done.read_text())["metrics"]["iters"] == 2


def test_smoke_names_an_unknown_dataset_kind_and_a_failing_stage(tmp_path, capsys):
    unknown = tmp_path / "fmnist.yaml"
    unknown.write_text("name: fmnist\npretrain:\n  config: fashion_mnist_cpu\n")
    assert suite_main([str(unknown), "--smoke", "-o", str(tmp_path / "a"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no tiny-data writer for the dataset kind 'fashion_mnist'" in err and "\n" not in err.strip()
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\ndevice: cpu\npretrain:\n  config: cpu_small\n  estimators: [nce]\n"
                      "  overrides: [MODEL.BACKBONE, resnet7]\nlincls:\n  enabled: false\ndetection:\n  enabled: false\n"
                      "meta_dataset:\n  enabled: false\n")
    assert suite_main([str(broken), "--smoke", "-o", str(tmp_path / "b"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "stage 'pretrain moco-nce seed 0' failed" in err and "MODEL.BACKBONE 'resnet7'" in err and "pretrain.log" in err


def test_an_estimator_can_run_its_own_seeds(tmp_path):
    """pretrain.estimator_seeds: NCE at 5 seeds (its comparison with random init), Ring at the default 3;
    the random-init baselines cover every seed any estimator runs."""
    path = _tiny_suite(tmp_path, pretrain__seeds=[0, 1, 2], pretrain__estimator_seeds={"nce": [0, 1, 2, 3, 4]},
                       detection__enabled=False, meta_dataset__enabled=False)
    suite, _ = load_suite(path)
    names = [s.name for s in plan(suite, tmp_path / "out") if s.kind == "pretrain"]
    assert names == [f"pretrain moco-nce seed {s}" for s in range(5)] + [f"pretrain moco-ring seed {s}" for s in range(3)]
    baselines = [s.name for s in plan(suite, tmp_path / "out") if s.name.startswith("lincls random-init")]
    assert baselines == [f"lincls random-init rgb seed {s}" for s in range(5)]
    for bad, msg in [({"dcl": [0]}, "names dcl, which 'pretrain.estimators' does not run"),
                     ({"nce": 3}, "must map estimators to lists of seeds")]:
        with pytest.raises(SuiteError, match=msg):
            load_suite(_tiny_suite(tmp_path, pretrain__estimator_seeds=bad))


def test_detection_and_meta_dataset_can_take_a_subset_of_estimators(tmp_path):
    """detection/meta_dataset ``estimators: [nce]``: NCE and the random-init twins at the section's seeds, Ring
    only through the probe; a name that is no estimator stops when the suite loads."""
    path = _tiny_suite(tmp_path, pretrain__seeds=[0, 1], detection__estimators=["nce"], detection__seeds=[0],
                       meta_dataset__estimators=["nce"])
    suite, _ = load_suite(path)
    names = [s.name for s in plan(suite, tmp_path / "out")]
    assert [n for n in names if n.startswith("mask ")] == ["mask moco-nce seed 0", "mask random-init rgb seed 0"]
    assert [n for n in names if n.startswith("meta-dataset")] == [
        "meta-dataset moco-nce seed 0", "meta-dataset moco-nce seed 1", "meta-dataset random-init rgb seed 0",
        "meta-dataset random-init rgb seed 1"]
    assert "lincls moco-ring seed 1" in names
    with pytest.raises(SuiteError, match="'meta_dataset.estimators' names 'nse', which is not an estimator"):
        load_suite(_tiny_suite(tmp_path, meta_dataset__estimators=["nse"]))


def test_estimators_all_is_the_registry_and_an_unknown_one_stops_before_any_stage(tmp_path):
    from pretrain.contrastive.estimators import estimator_names

    suite, _ = load_suite(_tiny_suite(tmp_path, pretrain__estimators="all"))
    assert suite["pretrain"]["estimators"] == estimator_names() and estimator_names()[0] == "nce"
    assert len(estimator_names()) >= 8
    with pytest.raises(SuiteError, match="'pretrain.estimators' names 'rign', which is not registered"):
        load_suite(_tiny_suite(tmp_path, pretrain__estimators=["nce", "rign"]))


def test_a_moco_checkpoint_goes_through_every_task_as_its_named_row(tmp_path, monkeypatch):
    """The fast case: one MoCo .pth.tar entry, only its own stages (and the data conversion they need)."""
    import torch
    import torchvision

    from transfer.formats import write_weights
    from transfer.suite import run_suite

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.manual_seed(0)
    src = write_weights(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth.tar", "moco")
    path = _tiny_suite(tmp_path, knn={"enabled": True, "overrides": ["KNN.K", 5]},
                       backbones=[{"name": "mocov2", "path": str(src)}])
    suite, _ = load_suite(path)
    out = tmp_path / "out"
    mine = {st.name.split()[0]: st for st in plan(suite, out) if "mocov2" in st.name}
    assert set(mine) == {"lincls", "knn", "export", "mask", "meta-dataset"}
    # Detectron2 (run in the slow test and by test_detection): the task's config made to build this ResNet-18
    cmd = " ".join(map(str, mine["mask"].cmd))
    assert "MODEL.RESNETS.DEPTH 18 MODEL.RESNETS.STEM_OUT_CHANNELS 64 MODEL.RESNETS.RES2_OUT_CHANNELS 64" in cmd
    assert "--name mocov2" in " ".join(map(str, mine["export"].cmd))
    text = run_suite(suite, out, progress=False, select=lambda sts: [
        st for st in sts if ("mocov2" in st.name and st.kind != "export" and "mask" not in st.name)
        or st.kind == "convert"])
    for section in text.split("## ")[1:]:
        if not section.startswith("Detectron2"):
            assert "| mocov2 " in section and "(n=1)" in section, section[:300]
    s = json.loads((out / "backbones/default/mocov2_s0/lincls/summary.json").read_text())
    assert s["name"] == "mocov2" and s["seed"] == 0 and "MoCo checkpoint" in s["weights"]["format"]


@pytest.mark.slow
def test_backbones_from_files_go_through_every_task_as_named_rows(tmp_path, capsys, monkeypatch):
    """A torchvision .pth and a MoCo .pth.tar beside the pretraining run: every enabled task (linear probe, kNN,
    Detectron2, Meta-Dataset) evaluates each at the suite's seed, and each is a row named by its entry."""
    import torch
    import torchvision

    from transfer.formats import write_weights

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.manual_seed(0)
    tv = write_weights(torchvision.models.resnet18().state_dict(), tmp_path / "w" / "r18.pth", "torchvision")
    moco = write_weights(torchvision.models.resnet18().state_dict(), tmp_path / "w" / "r18.pth.tar", "moco")
    path = _tiny_suite(tmp_path, pretrain__estimators=["nce"], random_init=False,
                       knn={"enabled": True, "overrides": ["KNN.K", 5]},
                       backbones=[{"name": "tv-r18", "path": str(tv)}, {"name": "moco-r18", "path": str(moco)}])
    out = tmp_path / "out"
    assert suite_main([str(path), "-o", str(out), "--no-progress"]) == 0
    tables = (out / "results" / "tables.md").read_text()
    for section in tables.split("## ")[1:]:
        assert "| tv-r18" in section and "| moco-r18" in section and "| moco-nce" in section, section[:300]
    for name, src in (("tv-r18", tv), ("moco-r18", moco)):
        for stage in ("lincls", "knn", "det_mask", "meta_dataset"):
            s = json.loads((out / "backbones" / "default" / f"{name}_s0" / stage / "summary.json").read_text())
            assert s["method"] == "external" and s["name"] == name and s["seed"] == 0, (name, stage)
            assert s["config"]["WEIGHTS.SHA256"] == __import__("hashlib").sha256(src.read_bytes()).hexdigest()
    assert "Meta-Dataset" in capsys.readouterr().out


def test_backbones_entries_are_checked_before_any_stage(tmp_path):
    with pytest.raises(SuiteError, match="backbone 'x': .*nowhere.pth does not exist"):
        load_suite(_tiny_suite(tmp_path, backbones=[{"name": "x", "path": str(tmp_path / "nowhere.pth")}]))
    import torch
    import torchvision

    (tmp_path / "junk.pth").write_bytes(b"not weights")
    with pytest.raises(SuiteError, match="backbone 'j': .*junk.pth could not be read"):  # before any stage
        load_suite(_tiny_suite(tmp_path, backbones=[{"name": "j", "path": str(tmp_path / "junk.pth")}]))
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "a.pth")
    with pytest.raises(SuiteError, match="backbone 'a': .*does not fit resnet50"):
        load_suite(_tiny_suite(tmp_path, backbones=[{"name": "a", "path": str(tmp_path / "a.pth"),
                                                     "arch": "resnet50"}]))
    suite, _ = load_suite(_tiny_suite(tmp_path, backbones=[{"name": "a", "path": str(tmp_path / "a.pth")}]))
    assert (suite["backbones"][0]["depth"], suite["backbones"][0]["width"]) == (18, 64)
    with pytest.raises(SuiteError, match="backbone name 'a' is used twice"):
        load_suite(_tiny_suite(tmp_path, backbones=[{"name": "a", "path": str(tmp_path / "a.pth")}] * 2))
    with pytest.raises(SuiteError, match="'backbones\\[\\].weight'"):
        load_suite(_tiny_suite(tmp_path, backbones=[{"name": "a", "path": str(tmp_path / "a.pth"), "weight": 1}]))


def test_a_stage_that_exits_0_without_its_marker_is_an_error(tmp_path):
    import sys

    from transfer.suite import run_stage
    from transfer.tasks.base import Stage

    stage = Stage("quiet", [sys.executable, "-c", "print('nothing written')"], tmp_path / "summary.json",
                  tmp_path / "quiet.log")
    with pytest.raises(SuiteError, match=r"stage 'quiet' exited 0 without writing .*summary.json, the file that "
                                         r"marks it complete"):
        run_stage(stage)


def test_a_pretraining_stage_with_a_checkpoint_but_no_summary_is_resumed_not_done(tmp_path):
    """Killed after its last checkpoint but before its summary: the suite runs the stage again, which resumes
    (--auto-resume) and writes the whole run's summary (its loss, not an empty session's 0)."""
    from transfer.suite import run_stage

    path = _tiny_suite(tmp_path, detection__enabled=False, meta_dataset__enabled=False, lincls__enabled=False,
                       random_init=False, pretrain__estimators=["nce"])
    (stage,) = plan(load_suite(path)[0], tmp_path / "out")
    run_stage(stage)
    first = json.loads(stage.done.read_text())["metrics"]
    stage.done.unlink()
    assert (stage.done.parent / "checkpoint_last.pth").exists() and not stage.done.exists()
    assert [s.name for s in plan(load_suite(path)[0], tmp_path / "out") if not s.done.exists()] == [stage.name]
    run_stage(stage)
    again = json.loads(stage.done.read_text())["metrics"]
    assert "resumed" in stage.log.read_text()
    assert (again["iters"], again["loss"]) == (first["iters"], first["loss"]) and first["loss"] > 0


def test_export_leaves_no_file_when_its_check_fails(tmp_path, monkeypatch):
    import torchvision

    from transfer.detection import export as export_mod
    from transfer.detection import integrity

    src = tmp_path / "r18.pth"
    import torch

    torch.save(torchvision.models.resnet18().state_dict(), src)

    def broken(*a, **k):
        raise RuntimeError("simulated failure during the check")
    monkeypatch.setattr(integrity, "max_feature_difference", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        export_mod.export(src, tmp_path / "model.pkl")
    assert not (tmp_path / "model.pkl").exists() and not list(tmp_path.glob(".model.pkl.*"))


def test_the_default_suite_gives_every_row_of_every_table_three_seeds(tmp_path):
    """make demo prints no table of one run: every evaluation stage of the embedded default (each task, each
    row: an estimator or random init) runs at >= 3 seeds, and every pretrained row has its random-init twin."""
    import re
    from collections import defaultdict

    suite, _ = load_suite(None)
    seeds = defaultdict(set)
    for s in plan(suite, tmp_path / "out"):
        m = re.match(r"(\S+) (moco-\w+|random-init rgb) seed (\d+)$", s.name)
        if m and s.kind not in ("pretrain", "export"):
            seeds[m[1], m[2]].add(int(m[3]))
    assert {task for task, _ in seeds} == {"lincls", "trees", "meta-dataset"}
    assert all(len(v) >= 3 for v in seeds.values()), dict(seeds)
    for task, row in list(seeds):
        assert seeds[task, row] <= seeds[task, "random-init rgb"]


@pytest.mark.slow  # the whole tiny suite twice; the scheduling itself is tested fast in test_local_stages.py
def test_the_suite_at_two_jobs_equals_one_stage_at_a_time(tmp_path, capsys, monkeypatch):
    """Same threads per stage (OMP_NUM_THREADS set), so the same numbers; only the order of the stages differs."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = _tiny_suite(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert suite_main([str(path), "-o", str(one), "--no-progress"]) == 0
    assert suite_main([str(path), "-o", str(two), "--no-progress", "--jobs", "2"]) == 0

    def summaries(out):  # every metric but the clocks (images/s, seconds); NaN (no detection yet) as a string
        return {str(p.relative_to(out)): {k: repr(v) for k, v in json.loads(p.read_text())["metrics"].items()
                                          if not (k.endswith("per_s") or k.endswith("seconds"))}
                for d in ("pretrain", "baselines") for p in (out / d).rglob("summary.json")}

    a, b = summaries(one), summaries(two)
    assert a.keys() == b.keys() and len(a) >= 8
    assert a == b
    assert any("top1" in m for m in a.values()) and any("loss" in m for m in a.values())
    assert (one / "results" / "tables.md").read_text() == (two / "results" / "tables.md").read_text()
