"""The SVG plots BENCHMARKS.md embeds, drawn with matplotlib (bench/run installs it in
its own venv, target/bench-venv, from bench/requirements.txt)."""

import os


def available():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"svg.hashsalt": "cronmail", "font.size": 9})  # stable SVG ids
    return plt


def _axes(ax, xlabel, ylabel, title, grid="both"):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", axis=grid, alpha=0.3)


def _save(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def scaling(path, table):
    """table: list of dicts with n, check_s, check_peak_mb, run_peak_mb, settled_mb."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    ns = [r["n"] for r in table]
    a.loglog(ns, [r["check_s"] * 1000 for r in table], "o-", label="cronmail check")
    a.loglog(ns, [table[-1]["check_s"] * 1000 * n / ns[-1] for n in ns], ":", color="grey", label="linear")
    _axes(a, "jobs", "ms", "check time")
    a.legend()
    b.loglog(ns, [r["check_peak_mb"] for r in table], "s-", label="check, peak")
    b.loglog(ns, [r["run_peak_mb"] for r in table], "^-", label="run, peak while loading")
    b.loglog(ns, [r["settled_mb"] for r in table], "o-", label="run, settled")
    _axes(b, "jobs", "MB", "resident memory")
    b.legend()
    _save(plt, fig, path)


def fire(path, runs):
    """runs: list of (label, result) from examples/fire_lateness --json (hist, baseline_hist)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.4), squeeze=False)
    edges = [0.001 * 10 ** (5 * i / 40) for i in range(41)]
    for ax, (label, r) in zip(axes[0], runs):
        ax.stairs(r["hist"], edges, label="cronmail (p99 %.3f ms)" % r["p99_ms"], linewidth=1.5)
        ax.stairs(r["baseline_hist"], edges, label="sleep_until (p99 %.3f ms)" % r["baseline_p99_ms"],
                  linewidth=1.2, linestyle="--")
        ax.set_xscale("log")
        _axes(ax, "lateness, ms (scheduled instant to hand-off)", "occurrences", label)
        ax.legend()
    _save(plt, fig, path)


def bursts(path, bars):
    """bars: list of (group, label, msg/s); cronmail's own bars are those labelled cronmail."""
    plt = _plt()
    groups = []
    for g, _, _ in bars:
        if g not in groups:
            groups.append(g)
    fig, axes = plt.subplots(1, len(groups), figsize=(2.6 * len(groups), 3.6), squeeze=False)
    for ax, g in zip(axes[0], groups):
        items = [(l, v) for gg, l, v in bars if gg == g]
        colors = ["tab:blue" if l == "cronmail" else "tab:grey" for l, _ in items]
        ax.bar(range(len(items)), [v for _, v in items], color=colors)
        ax.set_xticks(range(len(items)), [l for l, _ in items], rotation=30, ha="right")
        _axes(ax, "", "messages/s", g, grid="y")
    _save(plt, fig, path)


def draw(out_dir, scaling_table, fire_runs, bars):
    """Draws what there is data for; returns the file names written."""
    written = []
    if scaling_table:
        scaling(os.path.join(out_dir, "BENCHMARKS-scaling.svg"), scaling_table)
        written.append("BENCHMARKS-scaling.svg")
    if fire_runs:
        fire(os.path.join(out_dir, "BENCHMARKS-fire.svg"), fire_runs)
        written.append("BENCHMARKS-fire.svg")
    if bars:
        bursts(os.path.join(out_dir, "BENCHMARKS-bursts.svg"), bars)
        written.append("BENCHMARKS-bursts.svg")
    return written
