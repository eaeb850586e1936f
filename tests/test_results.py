import json

import pytest

from transfer.results import MISSING, main as results_main, make_tables, render


def _write(root, name, **s):
    d = root / name
    d.mkdir(parents=True)
    base = {"backbone": "resnet18", "seed": 0}
    (d / "summary.json").write_text(json.dumps({**base, **s}))


@pytest.fixture
def runs(tmp_path):
    for seed, (nce, ring) in enumerate([(80.0, 83.0), (82.0, 85.0)]):
        _write(tmp_path, f"moco_nce_s{seed}/lincls", stage="lincls", method="moco", estimator="nce",
               dataset="cifar10", seed=seed, metrics={"top1": nce, "top5": 99.0})
        _write(tmp_path, f"moco_ring_s{seed}/lincls", stage="lincls", method="moco", estimator="ring",
               dataset="cifar10", seed=seed, metrics={"top1": ring})
    _write(tmp_path, "ir_nce/lincls", stage="lincls", method="ir", estimator="nce", dataset="stl10",
           protocol="paper", metrics={"top1": 70.0})
    _write(tmp_path, "moco_nce_s0/det", stage="detection", method="moco", estimator="nce", task="mask_rcnn_FPN",
           dataset="scenes", metrics={"bbox/AP": 40.0, "bbox/AP50": 60.0, "bbox/AP75": 42.0, "segm/AP": 35.0})
    _write(tmp_path, "moco_ring_s0/det", stage="detection", method="moco", estimator="ring", task="mask_rcnn_FPN",
           dataset="scenes", metrics={"bbox/AP": 41.5, "bbox/AP50": 61.0, "bbox/AP75": 43.0, "segm/AP": 36.0})
    _write(tmp_path, "moco_ring_s0/md", stage="meta_dataset", method="moco", estimator="ring", protocol="variable",
           classifier="ncc-cosine", metrics={}, sources=[{"source": "omniglot", "accuracy": 60.0, "ci95": 1.2}])
    _write(tmp_path, "pretrain_only", stage="pretrain", method="moco", estimator="nce", dataset="cifar10",
           metrics={"loss": 1.0})
    return tmp_path


def test_linear_table_seeds_deltas_and_missing_cells(runs):
    tables, deltas = make_tables([runs])
    lin = tables["linear"]
    c10, stl = "cifar10 (cached protocol)", "stl10 (paper protocol)"
    assert lin.loc["moco-nce", c10] == "81.00 ± 1.41 (n=2)"
    assert lin.loc["moco-ring", c10] == "84.00 ± 1.41 (n=2)"
    assert lin.loc["Δ moco-ring − nce", c10] == "+3.00"
    assert lin.loc["ir-nce", stl] == "70.00" and lin.loc["ir-nce", c10] == MISSING
    assert lin.loc["moco-nce", stl] == MISSING and lin.loc["Δ moco-ring − nce", stl] == MISSING
    assert deltas["linear"].loc["Δ moco-ring − nce", c10] == pytest.approx(3.0)


def test_detection_and_meta_dataset_tables(runs):
    tables, _ = make_tables([runs])
    det = tables["detection"]
    assert det.loc["moco-ring", "mask_rcnn_FPN scenes: box AP"] == "41.50"
    assert det.loc["Δ moco-ring − nce", "mask_rcnn_FPN scenes: mask AP"] == "+1.00"
    assert "mask_rcnn_FPN scenes: kp AP" not in det.columns  # no run measured it
    md = tables["meta_dataset"]
    assert md.loc["moco-ring", "omniglot (variable, ncc-cosine)"] == "60.00 ± 1.20"
    assert "Δ moco-ring − nce" not in md.index  # no NCE base measured: no invented delta


def test_same_tables_every_time_in_every_format(runs, tmp_path, capsys):
    a = render(make_tables([runs])[0], "md")
    assert a == render(make_tables([runs])[0], "md")
    for fmt in ("csv", "tex", "html"):
        assert "moco-ring" in render(make_tables([runs])[0], fmt)
    out = tmp_path / "t.md"
    assert results_main([str(runs), "-o", str(out)]) == 0
    assert out.read_text() == a and (tmp_path / "t.png").stat().st_size > 1000
    assert results_main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_every_summary_records_the_code_behind_it(tmp_path):
    import subprocess

    from pretrain.io import write_summary
    from tests.conftest import ROOT

    s = write_summary(tmp_path, stage="lincls", method="moco", estimator="nce", backbone="resnet18", dataset="x",
                      seed=0, metrics={"top1": 1.0})
    assert s["ringnce_version"] == "0.1.0"
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert s["git_commit"].split("+")[0] == head.strip()
    assert json.loads((tmp_path / "summary.json").read_text())["git_commit"] == s["git_commit"]
