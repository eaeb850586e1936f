"""ring-results: the paper's tables from any set of run directories, with their uncertainty.

    ring-results runs/suite                       # every summary.json below, printed as markdown
    ring-results runs/a runs/b -o tables.md --format md|csv|tex|html
    ring-results runs/suite --plot deltas.png

Three tables (linear evaluation and kNN; Detectron2 transfer; Meta-Dataset), each with a row per method x
estimator x configuration, the random-init baseline as a row, and Delta rows below:
- a cell is keyed by the resolved configuration minus the seed and paths (``pretrain.config.result_
  fingerprint``): two backbones, two protocols or two annealing schedules never share a cell; a seed seen
  twice in a cell counts once;
- a cell with n >= 2 seeds is "mean ± 95 % CI (n=k)" (Student t over seeds); with one seed it says "(n=1)";
  Meta-Dataset cells keep the per-episode CI and, over seeds, add the seed CI;
- a Delta is *paired*: the per-seed difference over the seeds both rows share, "mean ± 95 % CI (n=k)",
  marked * when the CI excludes 0 and † when that survives Holm's correction over the table's Deltas;
  seeds only one side has are dropped from the pairing and named; with n=1 a Delta carries no mark.
  Every non-NCE estimator is paired with the NCE run of the same configuration, every pretrained row with
  the random-init baseline of the same architecture.
A cell that no run produced is shown as missing ("-"), never filled in.
"""
from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from pretrain.common import UserError, cli_main, command_parser
from transfer.tasks import table_titles, tasks

MISSING = "-"
RANDOM_INIT = "random_init"
# What fixes a random-init backbone's architecture and its evaluation: a baseline pairs with every pretrained
# run that agrees on these.
ARCHITECTURE_KEYS = ("MODEL.", "DATA.", "CMC.WIDTH", "streams")
EXTERNAL = "external"  # weights from a file (pretrain.config.provenance): a row per file, keyed by content
WEIGHTS_KEYS = ("WEIGHTS.NAME", "WEIGHTS.SHA256")


@functools.lru_cache(maxsize=1)
def estimator_keys() -> tuple[str, ...]:
    """The estimators' own settings, dropped when pairing a row with its NCE base (``pretrain.config``)."""
    from pretrain.config import estimator_keys as declared

    return declared()


@functools.lru_cache(maxsize=1)
def estimator_order() -> tuple[str, ...]:
    from pretrain.contrastive.estimators import estimator_names

    return tuple(estimator_names())


@functools.lru_cache(maxsize=1)
def evaluation_keys() -> tuple[str, ...]:
    """The evaluations' own settings (every task's ``evaluation_keys``): part of a column, not of the row."""
    return tuple(k for t in tasks() for k in t.evaluation_keys)


class ResultsError(UserError):
    """A run folder or summary that cannot be read, or an unknown output format."""


@dataclass
class Table:
    """One rendered table: the formatted cells (Delta rows last), the Deltas' means and CI half-widths
    (NaN where n < 2) for the plot, and the table's footnote."""
    cells: pd.DataFrame
    delta: pd.DataFrame = field(default_factory=pd.DataFrame)
    delta_ci: pd.DataFrame = field(default_factory=pd.DataFrame)
    note: str = ""

    @property
    def empty(self) -> bool:
        return self.cells.empty


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


def _matches(key: str, prefixes) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in prefixes)


@functools.lru_cache(maxsize=1)
def _defaults() -> dict:
    from pretrain.config import get_defaults, result_fingerprint

    return result_fingerprint(get_defaults())


def _recorded_config(s: dict) -> dict:
    """The summary's configuration; keys added to the project after it was written take their default."""
    if not isinstance(s.get("config"), dict):
        return {}
    return {**_defaults(), **s["config"]}


def _config_of(s: dict) -> dict:
    """The row key of a summary: its recorded configuration (older summaries: the backbone alone), without
    the evaluation's own settings."""
    cfg = {k: v for k, v in _recorded_config(s).items() if not _matches(k, evaluation_keys())}
    cfg.setdefault("MODEL.BACKBONE", str(s.get("backbone")))
    cfg["streams"] = _streams(cfg.get("OBJECTIVE.NAME", s.get("method")))
    if s["method"] == RANDOM_INIT:  # an untrained backbone: only its architecture and evaluation matter
        cfg = {k: v for k, v in cfg.items() if _matches(k, ARCHITECTURE_KEYS)}
    elif s["method"] == EXTERNAL:  # a weights file: its content (and the name it was given), nothing else
        cfg = {k: v for k, v in cfg.items() if _matches(k, WEIGHTS_KEYS)}
        if not cfg.get("WEIGHTS.SHA256"):  # written before files were hashed: at least never merge two paths
            cfg = {"WEIGHTS.NAME": str(s.get("name") or s.get("checkpoint") or s.get("weights")), "WEIGHTS.SHA256": "?"}
    for k in ("OBJECTIVE.NAME", "OBJECTIVE.ESTIMATOR"):
        cfg.pop(k, None)  # the row's method and estimator
    return cfg


def _streams(objective: str) -> str:
    """The objective's input (``input_streams``: rgb, or CMC's lab); an objective not registered here reads RGB."""
    from pretrain.contrastive.objectives import OBJECTIVE_REGISTRY

    return OBJECTIVE_REGISTRY.get(objective).input_streams if objective in OBJECTIVE_REGISTRY else "rgb"


def _group(s: dict) -> tuple:
    return s["method"], s.get("estimator") or "none", tuple(sorted(_config_of(s).items()))


def _long(summaries: list[dict]) -> pd.DataFrame:
    """One row per (summary, metric): table, group, column, seed, value (and the episode CI)."""
    rows = []

    def add(table, s, column, value, ci=np.nan, evaluation=()):
        rows.append(dict(table=table, group=_group(s), column=column, seed=s.get("seed"), value=float(value),
                         ci=ci, path=s["_path"], evaluation=evaluation))

    every = tasks()
    for s in summaries:
        config = _recorded_config(s)
        for task in every:
            evaluation = tuple(sorted((k, v) for k, v in config.items() if _matches(k, task.evaluation_keys)))
            for r in task.rows(s):
                add(r.table, s, r.column, r.value, r.ci, evaluation)
    df = pd.DataFrame(rows, columns=["table", "group", "column", "seed", "value", "ci", "path", "evaluation"])
    # two linear evaluations of one kind (e.g. 30 and 100 epochs) are two columns, named by what differs
    for column, sel in df.groupby("column"):
        settings = [dict(e) for e in sel.evaluation.unique()]
        if len(settings) > 1:
            keys = _differing(settings)
            df.loc[sel.index, "column"] = [_with_keys(column, dict(e), keys) for e in sel.evaluation]
    # a seed seen twice in a cell (the same run in two folders) counts once: the first by path
    return df.sort_values("path").drop_duplicates(["table", "group", "column", "seed"], keep="first")


def ci95(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95 % Student-t confidence interval, n); the half-width is NaN for n < 2."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n == 0:
        return np.nan, np.nan, 0
    if n == 1:
        return float(v[0]), np.nan, 1
    return float(v.mean()), float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / np.sqrt(n)), n


def paired_delta(a: dict, b: dict) -> dict:
    """a - b over the seeds both have ({seed: value} each): mean, CI half-width, n, two-sided p (t test), the
    seeds dropped because only one side has them."""
    shared = sorted(set(a) & set(b), key=str)
    d = [a[s] - b[s] for s in shared]
    mean, h, n = ci95(d)
    p = np.nan
    if n >= 2:
        sd = np.std(d, ddof=1)
        p = 0.0 if sd == 0 and mean != 0 else (1.0 if sd == 0 else
                                                float(2 * stats.t.sf(abs(mean) / (sd / np.sqrt(n)), n - 1)))
    return dict(mean=mean, ci=h, n=n, p=p, unpaired=sorted(set(a) ^ set(b), key=str))


def holm(pvalues: list[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise level alpha."""
    order = np.argsort(pvalues)
    reject = [False] * len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (len(pvalues) - rank):
            break
        reject[i] = True
    return reject


def _differing(configs: list[dict]) -> list[str]:
    """The keys whose values are not the same in every one of ``configs``."""
    return sorted({k for c in configs for k in c if len({c.get(k) for c in configs}) > 1})


def _with_keys(name: str, config: dict, keys: list[str]) -> str:
    return name + " [" + ", ".join(f"{k}={config.get(k, MISSING)}" for k in keys) + "]"


def _label(method: str, estimator: str, cfg: dict) -> str:
    if method == EXTERNAL:
        return cfg.get("WEIGHTS.NAME", EXTERNAL)
    return "random init" if method == RANDOM_INIT else (f"{method}-{estimator}" if estimator != "none" else method)


def _labels(groups: list[tuple]) -> dict[tuple, str]:
    """Row labels: method-estimator (a weights file: its name), plus the configuration keys that tell apart rows
    sharing that name (two files of one name: their content hashes)."""
    out = {}
    for g in groups:
        label = _label(*g[:2], dict(g[2]))
        same = [h for h in groups if _label(*h[:2], dict(h[2])) == label]
        out[g] = _with_keys(label, dict(g[2]), _differing([dict(h[2]) for h in same])) if len(same) > 1 else label
    return out


def _order(g: tuple) -> tuple:
    method, est = g[:2]
    return (method == RANDOM_INIT, method == EXTERNAL, method,
            estimator_order().index(est) if est in estimator_order() else 99, str(g[2]))


def _fmt_cell(sel: pd.DataFrame, episode_ci: bool) -> str:
    if sel.empty:
        return MISSING
    mean, h, n = ci95(sel.value)
    if n == 1:
        return (f"{mean:.2f} ± {sel.ci.iloc[0]:.2f} (n=1)" if episode_ci and pd.notna(sel.ci.iloc[0])
                else f"{mean:.2f} (n=1)")
    extra = f"; episodes ± {sel.ci.mean():.2f}" if episode_ci and sel.ci.notna().any() else ""
    return f"{mean:.2f} ± {h:.2f} (n={n}{extra})"


def _pairs(groups: list[tuple]) -> list[tuple[tuple, tuple, str]]:
    """(row, base, base name): each non-NCE estimator against the NCE run of the same configuration, each
    pretrained row against the random-init baseline of its architecture."""
    def without(cfg, prefixes):
        return tuple((k, v) for k, v in cfg if not _matches(k, prefixes))

    out = []
    for g in groups:
        method, est, cfg = g
        if method == RANDOM_INIT:
            continue
        if est != "nce":
            base = [h for h in groups if h[:2] == (method, "nce")
                    and without(h[2], estimator_keys()) == without(cfg, estimator_keys())]
            if base:
                out.append((g, base[0], "nce"))
    for g in groups:
        if g[0] == RANDOM_INIT:
            continue
        arch = tuple((k, v) for k, v in g[2] if _matches(k, ARCHITECTURE_KEYS))
        base = [h for h in groups if h[0] == RANDOM_INIT and h[2] == arch]
        if base:
            out.append((g, base[0], "random init"))
    return out


def build_table(long: pd.DataFrame, table: str) -> Table:
    d = long[long.table == table]
    if d.empty:
        return Table(pd.DataFrame())
    columns = sorted(d.column.unique())
    groups = sorted(d.group.unique(), key=_order)
    labels = _labels(groups)
    cells = pd.DataFrame([[_fmt_cell(d[(d.group == g) & (d.column == c)], table == "meta_dataset")
                           for c in columns] for g in groups], index=[labels[g] for g in groups], columns=columns)
    seeds = {(g, c): dict(zip(sel.seed, sel.value)) for (g, c), sel in d.groupby(["group", "column"])}
    rows, means, cis, tested = {}, {}, {}, []
    for g, base, base_name in _pairs(groups):
        name = f"Δ {labels[g]} − {base_name}"
        results = [paired_delta(seeds.get((g, c), {}), seeds.get((base, c), {})) for c in columns]
        rows[name], means[name], cis[name] = results, [r["mean"] for r in results], [r["ci"] for r in results]
        tested += [(name, j, r["p"]) for j, r in enumerate(results) if r["n"] >= 2]
    survives = dict(zip([(n, j) for n, j, _ in tested], holm([p for *_, p in tested]))) if tested else {}
    shown = []
    marked = 0
    for name, results in rows.items():
        line = []
        for j, r in enumerate(results):
            if r["n"] == 0:
                line.append(MISSING)
                continue
            if r["n"] == 1:
                text = f"{r['mean']:+.2f} (n=1)"
            else:
                excl = abs(r["mean"]) > r["ci"]
                marked += excl
                text = f"{r['mean']:+.2f} ± {r['ci']:.2f} (n={r['n']})" + ("*" if excl else "") + \
                       ("†" if excl and survives.get((name, j)) else "")
            if r["unpaired"]:
                text += f" [unpaired seeds dropped: {', '.join(map(str, r['unpaired']))}]"
            line.append(text)
        shown.append(pd.Series(line, index=columns, name=name))
    out = pd.concat([cells, pd.DataFrame(shown)]) if shown else cells
    out.index.name = "method-estimator"
    note = ""
    if tested:
        note = (f"Δ: paired over shared seeds, mean ± 95 % CI (Student t); * the CI excludes 0; † also after Holm's "
                f"correction over this table's {len(tested)} Δs with n ≥ 2 ({marked} marked *, "
                f"{sum(survives.values())} †); (n=1): one run, no verdict.")
    elif rows:
        note = "Δ: every difference here is one run (n=1): no verdict."
    return Table(out, pd.DataFrame(means, index=columns).T, pd.DataFrame(cis, index=columns).T, note)


def render(tables: dict[str, Table], fmt: str) -> str:
    parts = []
    for key, t in tables.items():
        title = table_titles()[key]
        df = t.cells
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
        note = {"md": "\n\n{}", "csv": "# {}\n", "tex": "% {}\n", "html": "<p>{}</p>\n"}[fmt].format(t.note) \
            if t.note else ""
        parts.append(f"## {title}\n\n{body}{note}" if fmt == "md" else f"{title}\n{body}{note}")
    return "\n\n".join(parts) + "\n"


def delta_points(tables: dict[str, Table]) -> dict[str, tuple[list, int]]:
    """{table: ([(label, mean, CI half-width) of every Delta with a CI], how many Deltas were one run)}, for the
    tables with at least one Delta to draw."""
    out = {}
    for key, t in tables.items():
        if t.delta.empty:
            continue
        points = [(f"{name}\n{column}", t.delta.at[name, column], t.delta_ci.at[name, column])
                  for column in t.delta.columns for name in t.delta.index
                  if pd.notna(t.delta.at[name, column]) and pd.notna(t.delta_ci.at[name, column])]
        if points:
            out[key] = (points, int((t.delta.notna() & t.delta_ci.isna()).to_numpy().sum()))
    return out


def plot_deltas(tables: dict[str, Table], path: str | Path) -> bool:
    """One panel per table, one line per task (column): every Delta with n >= 2 as its mean and 95 % CI, a
    dashed line at 0; a Delta of one run has no CI and is not drawn (the panel names how many were left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = delta_points(tables)
    if not panels:
        return False
    heights = [0.5 * len(p) + 1.0 for p, _ in panels.values()]  # panels stacked, one row per Delta
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, sum(heights) + 0.3), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (key, (points, one_run)) in zip(axes[:, 0], panels.items()):
        y = np.arange(len(points))[::-1]
        for yi, (_, mean, ci) in zip(y, points):
            ax.errorbar(mean, yi, xerr=ci, fmt="o", markersize=4, capsize=3,
                        color="tab:blue" if abs(mean) > ci else "tab:gray")
        ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
        ax.set_yticks(y, [p[0] for p in points], fontsize=6)
        ax.set_xlabel("paired difference, mean ± 95 % CI (blue: CI excludes 0)", fontsize=7)
        title = table_titles()[key]
        ax.set_title(title if not one_run else f"{title}\n({one_run} Δ of one run not drawn: no CI)", fontsize=7)
    fig.tight_layout()
    from pretrain.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return True


def make_tables(paths) -> dict[str, Table]:
    """Every table over the summaries under ``paths``; none at all is an error (a wrong folder, not a result)."""
    found = collect(paths)
    if not found:
        raise ResultsError(f"no summary.json under {', '.join(map(str, paths)) or '(nothing given)'}; pass the "
                           "folders ring-pretrain, ring-lincls, ring-train-net or ring-suite wrote (e.g. runs/suite).")
    long = _long(found)
    return {key: build_table(long, key) for key in table_titles()}


@cli_main("ring-results")
def main(argv: list[str] | None = None) -> int:
    p = command_parser("ring-results", __doc__, output="a file to write the tables to (besides printing them)")
    p.add_argument("runs", nargs="+", help="run directories (searched recursively) or summary.json files")
    p.add_argument("--format", default="md", choices=["md", "csv", "tex", "html"])
    p.add_argument("--plot", default=None, help="PNG of the Deltas with their CIs (default: next to -o)")
    args = p.parse_args(argv)
    tables = make_tables(args.runs)
    text = render(tables, args.format)
    print(text)
    if args.output:
        from pretrain.io import atomic_write_text

        atomic_write_text(args.output, text)
    plot = args.plot or (str(Path(args.output).with_suffix(".png")) if args.output else None)
    if plot and plot_deltas(tables, plot):
        print(f"[ring-results] deltas plot -> {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
