"""Per-run curves: ``curves.png`` in each run directory of a suite, from the files the run already wrote.

- a pretraining run (``metrics.jsonl``): its loss per logged iteration and, when the kNN monitor ran, its kNN
  top-1 per epoch;
- every linear probe under the run (``summary.json`` with ``probe_loss``, one value per epoch): the probe's
  training loss, labelled by its folder (a random-init twin's folder has only this panel).
Nothing is recomputed; a run without any of these gets no figure.
"""
from __future__ import annotations

import json
from pathlib import Path


def read_pretraining(run: Path) -> tuple[list, list, list, list]:
    """(iterations, losses, epochs, kNN top-1) from a run's metrics.jsonl (a resumed run's repeated lines once)."""
    loss, knn = {}, {}
    path = run / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            if "loss" in rec and "iter" in rec:
                loss[rec["iter"]] = rec["loss"]
            if rec.get("knn_top1") is not None:
                knn[rec["epoch"]] = rec["knn_top1"]
    return sorted(loss), [loss[k] for k in sorted(loss)], sorted(knn), [knn[k] for k in sorted(knn)]


def probe_losses(run: Path) -> dict[str, list[float]]:
    """{folder relative to the run: per-epoch loss} of every linear probe written under ``run``."""
    out = {}
    for f in sorted(run.rglob("summary.json")):
        try:
            s = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue
        if s.get("stage") == "lincls" and s.get("probe_loss"):
            out[str(f.parent.relative_to(run))] = s["probe_loss"]
    return out


def plot_run(run: Path, path: Path | None = None) -> Path | None:
    """Draw ``run``'s curves into ``path`` (default run/curves.png); None when the run has nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iters, losses, epochs, knn = read_pretraining(run)
    probes = probe_losses(run)
    panels = [p for p, present in (("loss", iters), ("knn", knn), ("probe", probes)) if present]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "loss":
            ax.plot(iters, losses, linewidth=1)
            ax.set(xlabel="iteration", ylabel="contrastive loss", title="pretraining loss")
        elif panel == "knn":
            ax.plot(epochs, knn, marker="o")
            ax.set(xlabel="epoch", ylabel="top-1 %", title="kNN monitor")
        else:
            for name, values in probes.items():
                ax.plot(range(1, len(values) + 1), values, label=name)
            ax.set(xlabel="probe epoch", ylabel="cross-entropy", title="linear probe (training loss)")
            ax.legend(fontsize=6)
    fig.suptitle(run.name, fontsize=8)
    fig.tight_layout()
    from pretrain.io import atomic_path

    path = path or run / "curves.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def plot_suite(folders) -> list[Path]:
    """curves.png in every run directory under ``folders`` (a suite's pretrain/, baselines/, backbones/: the
    folders two levels down, <dataset>/<run>)."""
    written = []
    for folder in map(Path, folders):
        for run in sorted(p for p in folder.glob("*/*") if p.is_dir()):
            drawn = plot_run(run)
            if drawn is not None:
                written.append(drawn)
    return written
