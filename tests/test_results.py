import json

import numpy as np
import pytest

from transfer.results import (MISSING, ci95, delta_points, holm, main as results_main, make_tables, paired_delta,
                              plot_deltas, render)

C10 = "cifar10 (cached protocol)"
CFG = {"MODEL.BACKBONE": "resnet18", "MODEL.WIDTH": "64", "DATA.NAME": "cifar10", "SOLVER.EPOCHS": "200",
       "RING.SCHEDULE": "constant", "OBJECTIVE.NAME": "moco"}


def _write(root, folder, **s):
    d = root / folder
    d.mkdir(parents=True)
    base = {"backbone": "resnet18", "seed": 0}
    (d / "summary.json").write_text(json.dumps({**base, **s}))


def _lin(root, name, method, estimator, seed, top1, **cfg):
    _write(root, name, stage="lincls", method=method, estimator=estimator, dataset="cifar10", seed=seed,
           metrics={"top1": top1}, config={**CFG, "OBJECTIVE.ESTIMATOR": estimator, **cfg})


@pytest.fixture
def runs(tmp_path):
    for seed, (nce, ring) in enumerate([(80.0, 83.0), (82.0, 85.0)]):
        _lin(tmp_path, f"moco_nce_s{seed}/lincls", "moco", "nce", seed, nce)
        _lin(tmp_path, f"moco_ring_s{seed}/lincls", "moco", "ring", seed, ring)
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


def test_ci_and_paired_delta_equal_a_hand_computation():
    # mean 81, sd sqrt(2), t(0.975, 1) = 12.7062...: half-width 12.7062 * sqrt(2) / sqrt(2)
    mean, h, n = ci95([80.0, 82.0])
    assert (mean, n) == (81.0, 2) and h == pytest.approx(12.7062047, rel=1e-6)
    mean, h, n = ci95([1.0, 2.0, 4.0])  # sd = 1.5275, t(0.975, 2) = 4.3027
    assert mean == pytest.approx(7 / 3) and h == pytest.approx(4.30265273 * 1.52752523 / np.sqrt(3), rel=1e-6)
    assert np.isnan(ci95([5.0])[1]) and ci95([])[2] == 0
    d = paired_delta({0: 3.0, 1: 5.0, 2: 4.0, 7: 9.0}, {0: 1.0, 1: 2.0, 2: 2.0, 5: 0.0})
    assert d["n"] == 3 and d["mean"] == pytest.approx(7 / 3) and d["unpaired"] == [5, 7]
    assert d["ci"] == pytest.approx(4.30265273 * np.std([2, 3, 2], ddof=1) / np.sqrt(3), rel=1e-6)


def test_holm_steps_down():
    # alpha 0.05, m = 4: thresholds 0.0125, 0.0167, 0.025, 0.05
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm([0.001, 0.01, 0.02, 0.04]) == [True, True, True, True]
    assert holm([0.2, 0.001]) == [False, True]


def test_cells_ci_paired_delta_and_one_seed(runs):
    tables = make_tables([runs])
    lin = tables["linear"].cells
    assert lin.loc["moco-nce", C10] == "81.00 ± 12.71 (n=2)"
    assert lin.loc["moco-ring", C10] == "84.00 ± 12.71 (n=2)"
    # the per-seed differences are both +3: a zero-width CI that excludes 0, and survives Holm (one test)
    assert lin.loc["Δ moco-ring − nce", C10] == "+3.00 ± 0.00 (n=2)*†"
    assert lin.loc["ir-nce", "stl10 (paper protocol)"] == "70.00 (n=1)" and lin.loc["ir-nce", C10] == MISSING
    assert lin.loc["Δ moco-ring − nce", "stl10 (paper protocol)"] == MISSING
    assert tables["linear"].delta.loc["Δ moco-ring − nce", C10] == pytest.approx(3.0)
    assert "1 Δs with n ≥ 2 (1 marked *, 1 †)" in tables["linear"].note
    det = tables["detection"].cells
    assert det.loc["moco-ring", "mask_rcnn_FPN scenes: box AP"] == "41.50 (n=1)"
    assert det.loc["Δ moco-ring − nce", "mask_rcnn_FPN scenes: mask AP"] == "+1.00 (n=1)"  # no verdict mark
    assert "mask_rcnn_FPN scenes: kp AP" not in det.columns  # no run measured it
    md = tables["meta_dataset"].cells
    assert md.loc["moco-ring", "omniglot (variable, ncc-cosine)"] == "60.00 ± 1.20 (n=1)"
    assert "Δ moco-ring − nce" not in md.index  # no NCE base measured: no invented delta


def test_a_delta_whose_ci_contains_zero_is_not_marked(tmp_path):
    for seed, (nce, ring) in enumerate([(80.0, 83.0), (82.0, 81.0), (81.0, 82.0)]):
        _lin(tmp_path, f"n{seed}", "moco", "nce", seed, nce)
        _lin(tmp_path, f"r{seed}", "moco", "ring", seed, ring)
    cell = make_tables([tmp_path])["linear"].cells.loc["Δ moco-ring − nce", C10]
    h = 4.30265273 * np.std([3, -1, 1], ddof=1) / np.sqrt(3)
    assert cell == f"+1.00 ± {h:.2f} (n=3)"


def test_two_backbones_and_two_schedules_never_share_a_cell(tmp_path):
    _lin(tmp_path, "a", "moco", "ring", 0, 80.0)
    _lin(tmp_path, "b", "moco", "ring", 0, 60.0, **{"MODEL.BACKBONE": "resnet50"})
    _lin(tmp_path, "c", "moco", "ring", 0, 70.0, **{"RING.SCHEDULE": "linear"})
    _lin(tmp_path, "d", "moco", "nce", 0, 75.0)
    lin = make_tables([tmp_path])["linear"].cells
    assert lin.loc["moco-ring [MODEL.BACKBONE=resnet18, RING.SCHEDULE=constant]", C10] == "80.00 (n=1)"
    assert lin.loc["moco-ring [MODEL.BACKBONE=resnet50, RING.SCHEDULE=constant]", C10] == "60.00 (n=1)"
    assert lin.loc["moco-ring [MODEL.BACKBONE=resnet18, RING.SCHEDULE=linear]", C10] == "70.00 (n=1)"
    # both ResNet-18 rings pair with the ResNet-18 NCE (the schedule is the ring's own knob); the R50 has no base
    deltas = [i for i in lin.index if i.startswith("Δ")]
    assert len(deltas) == 2 and all("resnet18" in i for i in deltas)


def test_a_repeated_seed_counts_once(tmp_path):
    _lin(tmp_path, "first/s0", "moco", "nce", 0, 80.0)
    _lin(tmp_path, "second/s0", "moco", "nce", 0, 80.0)  # the same run copied
    _lin(tmp_path, "first/s1", "moco", "nce", 1, 84.0)
    assert make_tables([tmp_path])["linear"].cells.loc["moco-nce", C10] == "82.00 ± 25.41 (n=2)"


def test_unshared_seeds_are_dropped_from_the_pairing_and_named(tmp_path):
    for seed in (0, 1, 2):
        _lin(tmp_path, f"n{seed}", "moco", "nce", seed, 80.0 + seed)
    for seed in (1, 2, 3):
        _lin(tmp_path, f"r{seed}", "moco", "ring", seed, 82.0 + seed)
    cell = make_tables([tmp_path])["linear"].cells.loc["Δ moco-ring − nce", C10]
    assert cell == "+2.00 ± 0.00 (n=2)*† [unpaired seeds dropped: 0, 3]"


def test_random_init_is_a_row_paired_by_seed_and_architecture(tmp_path):
    for seed in (0, 1, 2):
        _lin(tmp_path, f"n{seed}", "moco", "nce", seed, 50.0 + seed)
        _write(tmp_path, f"b{seed}", stage="lincls", method="random_init", estimator="none", dataset="cifar10",
               seed=seed, metrics={"top1": 30.0 + 2 * seed},
               config={**CFG, "OBJECTIVE.ESTIMATOR": "nce", "SOLVER.EPOCHS": "1"})  # training keys: not its key
    _write(tmp_path, "wide", stage="lincls", method="random_init", estimator="none", dataset="cifar10", seed=0,
           metrics={"top1": 10.0}, config={**CFG, "MODEL.WIDTH": "128"})
    lin = make_tables([tmp_path])["linear"].cells
    assert lin.loc["random init [MODEL.WIDTH=64]", C10] == "32.00 ± 4.97 (n=3)"
    assert lin.loc["Δ moco-nce − random init", C10] == "+19.00 ± 2.48 (n=3)*†"


def test_meta_dataset_cells_add_the_seed_ci_to_the_episode_ci(tmp_path):
    for seed, acc in enumerate([60.0, 62.0, 64.0]):
        _write(tmp_path, f"m{seed}", stage="meta_dataset", method="moco", estimator="nce", protocol="variable",
               classifier="ncc-cosine", seed=seed, metrics={},
               sources=[{"source": "omniglot", "accuracy": acc, "ci95": 1.0 + seed}])
    cell = make_tables([tmp_path])["meta_dataset"].cells.loc["moco-nce", "omniglot (variable, ncc-cosine)"]
    assert cell == "62.00 ± 4.97 (n=3; episodes ± 2.00)"


def test_same_tables_every_time_in_every_format(runs, tmp_path, capsys):
    a = render(make_tables([runs]), "md")
    assert a == render(make_tables([runs]), "md")
    tables = make_tables([runs])
    for fmt in ("csv", "tex", "html"):
        text = render(tables, fmt)
        assert "moco-ring" in text and "Holm" in text
    # the csv holds the md's cells, value for value
    import io

    import pandas as pd

    lin = tables["linear"].cells
    block = render({"linear": tables["linear"]}, "csv").split("\n", 1)[1].split("\n# ")[0]
    csv = pd.read_csv(io.StringIO(block), index_col=0, dtype=str, keep_default_na=False)
    assert csv.shape == lin.shape and (csv.values == lin.fillna("").astype(str).values).all()
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


def test_the_config_fingerprint_drops_seed_and_paths_only():
    from pretrain.config import get_defaults, result_fingerprint

    cfg = get_defaults()
    fp = result_fingerprint(cfg)
    assert "SEED" not in fp and "DATA.ROOT" not in fp and not any(k.startswith("CHECKPOINT.") for k in fp)
    assert fp["RING.SCHEDULE"] == "constant" and fp["MODEL.BACKBONE"] == "resnet18" and fp["LINCLS.STEPS"] == "[0.6, 0.8]"


def test_evaluation_settings_are_columns_and_new_keys_take_their_default(tmp_path):
    from pretrain.config import get_defaults, result_fingerprint

    full = result_fingerprint(get_defaults())
    old = {k: v for k, v in full.items() if k != "MODEL.COMPILE"}  # written before the key existed
    _write(tmp_path, "p", stage="pretrain", method="moco", estimator="nce", dataset="cifar10", seed=0,
           metrics={"knn_top1": 50.0}, config=old)
    for epochs, top1 in (("30", 60.0), ("100", 62.0)):
        _write(tmp_path, f"l{epochs}", stage="lincls", method="moco", estimator="nce", dataset="cifar10", seed=0,
               metrics={"top1": top1}, config={**full, "LINCLS.EPOCHS": epochs})
    lin = make_tables([tmp_path])["linear"].cells
    assert list(lin.index) == ["moco-nce"]  # one model: one row, whatever its evaluations and key vintage
    assert lin.loc["moco-nce", "cifar10 (cached protocol) [LINCLS.EPOCHS=30]"] == "60.00 (n=1)"
    assert lin.loc["moco-nce", "cifar10 (cached protocol) [LINCLS.EPOCHS=100]"] == "62.00 (n=1)"
    assert lin.loc["moco-nce", "cifar10 (kNN monitor)"] == "50.00 (n=1)"


def test_weights_files_are_rows_keyed_by_content_never_merged(tmp_path):
    """Two files given the same name are two rows (their hashes shown); one file at two seeds is one row, n=2;
    an external detection summary from before hashing is keyed by its path, not merged with another."""
    def ext(name, sha, seed, top1, row="r50"):
        _write(tmp_path, name, stage="lincls", method="external", estimator="none", dataset="cifar10", seed=seed,
               name=row, metrics={"top1": top1}, config={**CFG, "WEIGHTS.NAME": row, "WEIGHTS.SHA256": sha,
                                                         "LINCLS.EPOCHS": "100"})

    ext("a0", "aaa", 0, 60.0)
    ext("a1", "aaa", 1, 62.0)
    ext("b0", "bbb", 0, 70.0)
    ext("c0", "ccc", 0, 50.0, row="dino")
    for i, path in enumerate(("x.pkl", "y.pkl")):
        _write(tmp_path, f"old{i}", stage="detection", method="external", estimator="none", task="mask_rcnn_FPN",
               dataset="scenes", weights=path, metrics={"bbox/AP": 10.0 + i})
    tables = make_tables([tmp_path])
    lin = tables["linear"].cells
    assert sorted(lin.index) == ["dino", "r50 [WEIGHTS.SHA256=aaa]", "r50 [WEIGHTS.SHA256=bbb]"]
    assert lin.loc["r50 [WEIGHTS.SHA256=aaa]"].iloc[0].startswith("61.00 ±") and "(n=2)" in \
        lin.loc["r50 [WEIGHTS.SHA256=aaa]"].iloc[0]
    assert lin.loc["r50 [WEIGHTS.SHA256=bbb]"].iloc[0] == "70.00 (n=1)"
    det = tables["detection"].cells
    assert len(det) == 2 and sorted(det.iloc[:, 0]) == ["10.00 (n=1)", "11.00 (n=1)"]


def test_paired_delta_p_value_is_scipys_two_sided_paired_t_test_and_holm_at_the_border():
    from scipy import stats

    a, b = {0: 3.0, 1: 5.0, 2: 4.5, 3: 6.0}, {0: 2.0, 1: 4.5, 2: 2.0, 3: 5.5}
    d = paired_delta(a, b)
    ref = stats.ttest_rel([a[s] for s in range(4)], [b[s] for s in range(4)])  # two-sided
    assert d["p"] == pytest.approx(ref.pvalue, rel=1e-9) and d["p"] > 0.05 / 2  # a one-sided p would be half
    # Holm over 3, sorted: 0.01 <= 0.05/3, 0.025 <= 0.05/2 (exactly at the border), 0.04 <= 0.05/1: all rejected;
    # with 0.026 > 0.05/2 the step-down stops there, and the larger 0.03 is kept too
    assert holm([0.04, 0.01, 0.025]) == [True, True, True]
    assert holm([0.03, 0.01, 0.026]) == [False, True, False]  # 0.026 > 0.025 stops the step-down


def test_the_delta_plot_draws_only_deltas_with_a_ci(runs, tmp_path):
    """Ring − NCE on the probe has 2 seeds (a CI): drawn; the detection Δs are one run each: not drawn, counted."""
    tables = make_tables([runs])
    points = delta_points(tables)
    (drawn, one_run), = [points["linear"]]
    assert [p[0] for p in drawn] == [f"Δ moco-ring − nce\n{C10}"] and drawn[0][1:] == pytest.approx((3.0, 0.0))
    assert one_run == 0
    assert "detection" not in points  # every Δ there is n=1
    assert plot_deltas({"detection": tables["detection"]}, tmp_path / "none.png") is False
    assert not (tmp_path / "none.png").exists()
