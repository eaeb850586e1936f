"""ring-results: the paper's tables from any set of run directories.

    ring-results runs/suite                       # every summary.json below, printed as markdown
    ring-results runs/a runs/b -o tables.md --format md|csv|tex|html
    ring-results runs/suite --plot deltas.png

Three tables, each with a row per pretraining method x estimator, a row per Ring/Ball minus its NCE base
(Delta), and "mean +- std (n)" where several seeds exist:
- linear evaluation: top-1 accuracy, one column per dataset and linear-evaluation protocol;
- Detectron2 transfer: box AP/AP50/AP75, mask AP and keypoint AP, per task and dataset;
- Meta-Dataset: accuracy +- 95% CI per source (protocol and classifier in the column name).
A cell that no run produced is shown as missing ("-"), never filled in.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pretrain.common import UserError, cli_main, command_parser

MISSING = "-"


class ResultsError(UserError):
    """A run folder or summary that cannot be read, or an unknown output format."""


DETECTION_METRICS = [("bbox", "AP"), ("bbox", "AP50"), ("bbox", "AP75"), ("segm", "AP"), ("keypoints", "AP")]


def collect(paths) -> list[dict]:
    """Every summary.json under the given folders (or the files themselves), sorted by path."""
    files = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += p.rglob("summary.json")
        else:
            raise ResultsError(f"{p} does not exist; pass run directories or summary.json files.")
    out = []
    for f in sorted(set(files)):
        try:
            s = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ResultsError(f"{f} is not valid JSON ({e}); delete it or rerun its stage.") from None
        if isinstance(s, dict) and "stage" in s and "metrics" in s:
            s["_path"] = str(f)
            out.append(s)
    return out


def _row_name(s: dict) -> str:
    return f"{s['method']}-{s['estimator']}" if s.get("estimator") not in (None, "none") else s["method"]


def _long(summaries: list[dict]) -> pd.DataFrame:
    """One row per (summary, metric): row, column, seed, value."""
    rows = []
    for s in summaries:
        stage, m = s["stage"], s["metrics"]
        if stage == "lincls":
            if "top1" in m:
                protocol = {"cached_features": "cached"}.get(s.get("protocol"), s.get("protocol", "cached"))
                rows.append(dict(table="linear", row=_row_name(s), column=f"{s['dataset']} ({protocol} protocol)",
                                 seed=s["seed"], value=m["top1"]))
        elif stage == "detection":
            for task, metric in DETECTION_METRICS:
                if f"{task}/{metric}" in m:
                    label = {"bbox": "box", "segm": "mask", "keypoints": "kp"}[task]
                    rows.append(dict(table="detection", row=_row_name(s), seed=s["seed"],
                                     column=f"{s.get('task', '')} {s['dataset']}: {label} {metric}",
                                     value=m[f"{task}/{metric}"]))
        elif stage == "meta_dataset":
            for src in s.get("sources", []):
                col = f"{src['source']} ({s.get('protocol', '')}{'' if s.get('protocol') == 'linear' else ', ' + s.get('classifier', '')})"
                rows.append(dict(table="meta_dataset", row=_row_name(s), column=col, seed=s["seed"],
                                 value=src["accuracy"], ci=src["ci95"]))
    return pd.DataFrame(rows, columns=["table", "row", "column", "seed", "value", "ci"])


def _fmt(values: pd.Series, cis: pd.Series | None = None) -> str:
    v = values.dropna()
    if v.empty:
        return MISSING
    if len(v) == 1:
        ci = cis.dropna() if cis is not None else pd.Series(dtype=float)
        return f"{v.iloc[0]:.2f} ± {ci.iloc[0]:.2f}" if len(ci) else f"{v.iloc[0]:.2f}"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f} (n={len(v)})"


def build_table(long: pd.DataFrame, table: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(formatted table with Delta rows, numeric deltas)."""
    d = long[long.table == table]
    if d.empty:
        return pd.DataFrame(), pd.DataFrame()
    columns = sorted(d.column.unique())
    rows = sorted(d.row.unique(), key=lambda r: (r.split("-")[0], {"nce": 0, "ring": 1, "ball": 2}.get(r.split("-")[-1], 3), r))
    cells = {}
    means = {}
    for r in rows:
        for c in columns:
            sel = d[(d.row == r) & (d.column == c)]
            cells[(r, c)] = _fmt(sel.value, sel.ci if table == "meta_dataset" else None)
            means[(r, c)] = sel.value.mean() if len(sel) else np.nan
    out = pd.DataFrame([[cells[(r, c)] for c in columns] for r in rows], index=rows, columns=columns)
    deltas = {}
    for r in rows:
        method, _, est = r.rpartition("-")
        base = f"{method}-nce"
        if est in ("ring", "ball") and base in rows:
            deltas[f"Δ {r} − nce"] = [means[(r, c)] - means[(base, c)] for c in columns]
    delta_df = pd.DataFrame(deltas, index=columns).T if deltas else pd.DataFrame(columns=columns)
    if deltas:
        shown = delta_df.map(lambda x: MISSING if pd.isna(x) else f"{x:+.2f}")
        out = pd.concat([out, shown])
    out.index.name = "method-estimator"
    return out, delta_df


TITLES = {"linear": "Linear evaluation (top-1 %, frozen backbone)",
          "detection": "Detectron2 transfer (COCO-style AP)",
          "meta_dataset": "Meta-Dataset (accuracy % ± 95% CI)"}


def render(tables: dict[str, pd.DataFrame], fmt: str) -> str:
    parts = []
    for key, df in tables.items():
        title = TITLES[key]
        if df.empty:
            body = "(no runs)"
        elif fmt == "md":
            body = df.to_markdown(disable_numparse=True)  # keep "+1.00" and "40.00" as formatted
        elif fmt == "csv":
            body = df.to_csv()
        elif fmt == "tex":
            body = df.to_latex(escape=True)
        elif fmt == "html":
            body = df.to_html()
        else:
            raise ResultsError(f"--format {fmt}: choose md, csv, tex or html.")
        parts.append(f"## {title}\n\n{body}" if fmt == "md" else f"{title}\n{body}")
    return "\n\n".join(parts) + "\n"


def plot_deltas(deltas: dict[str, pd.DataFrame], path: str | Path) -> bool:
    """One panel per table: the Ring (and Ball) minus NCE differences as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = {k: d for k, d in deltas.items() if not d.empty and d.notna().any().any()}
    if not present:
        return False
    fig, axes = plt.subplots(1, len(present), figsize=(6 * len(present), 4), squeeze=False)
    for ax, (key, d) in zip(axes[0], present.items()):
        d.T.plot.bar(ax=ax, rot=30)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(TITLES[key], fontsize=9)
        ax.set_ylabel("difference to the NCE base")
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    from pretrain.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return True


def make_tables(paths) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    long = _long(collect(paths))
    tables, deltas = {}, {}
    for key in TITLES:
        tables[key], deltas[key] = build_table(long, key)
    return tables, deltas


@cli_main("ring-results")
def main(argv: list[str] | None = None) -> int:
    p = command_parser("ring-results", __doc__, output="a file to write the tables to (besides printing them)")
    p.add_argument("runs", nargs="+", help="run directories (searched recursively) or summary.json files")
    p.add_argument("--format", default="md", choices=["md", "csv", "tex", "html"])
    p.add_argument("--plot", default=None, help="PNG of the Ring - NCE deltas (default: next to -o)")
    args = p.parse_args(argv)
    tables, deltas = make_tables(args.runs)
    text = render(tables, args.format)
    print(text)
    if args.output:
        from pretrain.io import atomic_write_text

        atomic_write_text(args.output, text)
    plot = args.plot or (str(Path(args.output).with_suffix(".png")) if args.output else None)
    if plot and plot_deltas(deltas, plot):
        print(f"[ring-results] deltas plot -> {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
