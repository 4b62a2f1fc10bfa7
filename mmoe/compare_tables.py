"""``compare.json`` as Markdown tables: what ``mmoe compare`` prints and the benchmarks write.

Plain Python: one table of every model's headline metric per task (mean ± standard deviation
over seeds), one of the paired differences against the baselines with their 95% intervals and
verdicts, and one of the gates' specialisation.
"""

from __future__ import annotations

import numpy as np


def _mean_sd(values) -> str:
    array = np.asarray(values, dtype=np.float64)
    sd = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return f"{array.mean():.4f} ± {sd:.4f}"


def metrics_table(comparison: dict) -> str:
    """Models × tasks: the headline metric, mean ± sd over seeds."""
    headline = comparison["headline"]
    head = " | ".join(f"{task} {metric}" for task, metric in headline.items())
    lines = [f"| model | {head} | best epochs |", "|---" * (len(headline) + 2) + "|"]
    for model, tasks in comparison["models"].items():
        cells = " | ".join(_mean_sd(tasks[task][metric]) for task, metric in headline.items())
        epochs = ", ".join(str(e) for e in comparison.get("best_epoch", {}).get(model, []))
        lines.append(f"| {model} | {cells} | {epochs} |")
    return "\n".join(lines)


def paired_table(comparison: dict) -> str:
    """Each pair: per task the mean difference on the headline metric, its 95% interval, the
    outcome, and the pair's verdict."""
    headline = comparison["headline"]
    head = " | ".join(f"{task} {metric}: Δ [95% CI]" for task, metric in headline.items())
    lines = [f"| pair | {head} | verdict |", "|---" * (len(headline) + 2) + "|"]
    for pair, result in comparison["paired"].items():
        cells = []
        for task, metric in headline.items():
            value = result["tasks"][task][metric]
            cells.append(f"{value['mean']:+.4f} [{value['low']:+.4f}, {value['high']:+.4f}] {value['outcome']}")
        lines.append(f"| {pair} | {' | '.join(cells)} | **{result['verdict']}** |")
    return "\n".join(lines)


def gates_table(comparison: dict) -> str:
    """Gated models: entropy against uniform and dead experts per task, task divergence, label."""
    if not comparison.get("gates"):
        return ""
    first = next(iter(comparison["gates"].values()))
    tasks = list(first["tasks"])
    head = " | ".join(f"{task} H/log E | {task} dead" for task in tasks)
    lines = [f"| model | {head} | JS divergence (nats, max 0.693) | gates |", "|---" * (2 * len(tasks) + 3) + "|"]
    for model, gates in comparison["gates"].items():
        cells = " | ".join(
            f"{gates['tasks'][t]['entropy_vs_uniform']:.3f} | {gates['tasks'][t]['dead_experts']:.1f}/{gates['experts']}"
            for t in tasks
        )
        divergence = ", ".join(f"{value:.4f}" for value in gates["divergence"].values()) or "–"
        lines.append(f"| {model} | {cells} | {divergence} | {gates['specialisation']} |")
    return "\n".join(lines)


def comparison_markdown(comparison: dict) -> str:
    """The three tables, with a line saying what the seeds and the intervals are."""
    seeds = comparison["seeds"]
    parts = [
        f"Seeds {', '.join(map(str, seeds))}; mean ± standard deviation over seeds; Δ = model − baseline "
        "paired by seed, 95% t-interval; outcome per task: better (interval above 0), as good (lower end "
        "within the tolerance: 0.001 AUC, 0.1% of an error), worse (interval below 0 and past the tolerance), "
        "unclear (too wide to say).",
        metrics_table(comparison), paired_table(comparison), gates_table(comparison),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"
