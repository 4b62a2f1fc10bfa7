"""The run report: one self-contained HTML page a person reads after training.

Learning curves per task, the gate heatmap and gate usage over training, the eval metric table
(the model beside its baselines when they were trained), the best epoch, and the configuration.
Plots are embedded as data URIs, so the file can be mailed or attached to a ticket as it is.
"""

from __future__ import annotations

import base64
import html
import json

import tensorflow as tf

from feature_specs.artifacts import Workdir
from feature_specs.spec import FeatureSpec
from mmoe.compare_tables import gates_table, metrics_table, paired_table

def plots(workdir: Workdir) -> tuple[tuple[str, str], ...]:
    """``(path, caption)`` of each plot the report embeds (those written are shown)."""
    return (
        (workdir.learning_curves_png, "Learning curves (train and eval loss per task)"),
        (workdir.gates_png, "Gate weights on the eval split (task × expert)"),
        (workdir.gate_usage_png, "Gate usage over training"),
    )


# (column heading, metric section, key); the section is the task's name or "ranking"
BINARY_COLUMNS = (("AUC", "auc"), ("log loss", "log_loss"), ("calibration", "calibration"))
REGRESSION_COLUMNS = (("RMSE", "rmse"), ("MAE", "mae"))
RANKING_COLUMNS = (("NDCG@10", "ndcg@10"), ("MRR", "mrr"))


def _metric(values: dict, prefix: str) -> str:
    for key, value in values.items():
        if key == prefix or key.startswith(prefix + "_"):
            return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))
    return "–"


def metric_columns(spec: FeatureSpec) -> list[tuple[str, str, str]]:
    """``(heading, section, key prefix)`` for every column of the metric table."""
    columns = []
    for task in spec.tasks:
        chosen = BINARY_COLUMNS if task.kind == "binary" else REGRESSION_COLUMNS
        for heading, key in chosen:
            unit = f" ({task.unit})" if task.unit and task.kind != "binary" else ""
            columns.append((f"{task.name} {heading}{unit}", task.name, key))
    if spec.ranking.group_by:
        columns += [(heading, "ranking", key) for heading, key in RANKING_COLUMNS]
    return columns


def metric_table(spec: FeatureSpec, rows: dict[str, dict]) -> str:
    """An HTML table: one row per model (``{name: metrics.json dict}``), one column per metric."""
    columns = metric_columns(spec)
    head = "".join(f"<th>{html.escape(heading)}</th>" for heading, _, _ in columns)
    body = []
    for name, metrics in rows.items():
        cells = "".join(f"<td>{_metric(metrics.get(section, {}), key)}</td>" for _, section, key in columns)
        body.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return f"<table><tr><th>model</th>{head}</tr>{''.join(body)}</table>"


def history_table(history: dict[str, list[float]]) -> str:
    """Per-epoch values of every logged metric."""
    names = sorted(history)
    epochs = max((len(v) for v in history.values()), default=0)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for epoch in range(epochs):
        cells = "".join(
            f"<td>{history[n][epoch]:.4f}</td>" if epoch < len(history[n]) else "<td>–</td>" for n in names
        )
        rows.append(f"<tr><th>{epoch + 1}</th>{cells}</tr>")
    return f"<table><tr><th>epoch</th>{head}</tr>{''.join(rows)}</table>"


def _image(path: str, caption: str) -> str:
    if not tf.io.gfile.exists(path):
        return ""
    with tf.io.gfile.GFile(path, "rb") as handle:
        data = base64.b64encode(handle.read()).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child{text-align:left}img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}"""


def markdown_table_html(table: str) -> str:
    """A Markdown pipe table (:mod:`mmoe.compare_tables`) as an HTML table; ``**x**`` is bold."""
    rows = [line.strip().strip("|").split("|") for line in table.strip().splitlines()]
    rows = [row for row in rows if not all(set(cell.strip()) <= set("-:") for cell in row)]

    def cell(tag: str, text: str) -> str:
        text = html.escape(text.strip())
        if text.startswith("**") and text.endswith("**"):
            text = f"<strong>{text[2:-2]}</strong>"
        return f"<{tag}>{text}</{tag}>"

    head = "".join(cell("th", text) for text in rows[0])
    body = "".join("<tr>" + "".join(cell("th" if i == 0 else "td", t) for i, t in enumerate(row)) + "</tr>" for row in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def comparison_section(comparison: dict, plot_path: str | None = None) -> str:
    """The report's section for ``mmoe compare``: metrics over seeds, paired verdicts, gates.

    Args:
        comparison: a ``compare.json`` dict (:func:`mmoe.compare.summarize`).
        plot_path: the paired-differences plot to embed, if written.
    """
    seeds = ", ".join(map(str, comparison["seeds"]))
    parts = [
        f"<h2>Comparison over seeds ({html.escape(seeds)})</h2>",
        "<p>Same loop, budget and seeds for every model; mean ± standard deviation over seeds.</p>",
        markdown_table_html(metrics_table(comparison)),
        "<p>Model − baseline paired by seed on each task's headline metric, 95% t-interval. "
        "<em>seesaw</em>: worse than the baseline on a task while better on another; <em>worse</em>: "
        "worse on a task and better on none; <em>gain</em>: as good on every task (lower end within "
        "0.001 AUC or 0.1% of an error) and better on one.</p>",
        markdown_table_html(paired_table(comparison)),
    ]
    if comparison.get("gates"):
        parts += [
            "<h3>Do the gates choose?</h3><p>Per-example gate entropy over log E (1: uniform), experts "
            "that fewer than 1% of examples weigh above a tenth of uniform (dead), and the mean "
            "Jensen-Shannon divergence between the tasks' gates for the same example (0: one mixture "
            "for all tasks), means over seeds.</p>",
            markdown_table_html(gates_table(comparison)),
        ]
    if plot_path:
        parts.append(_image(plot_path, "Paired improvement over the baselines, 95% intervals (right of 0 is better)"))
    return "".join(parts)


def write_comparison_report(spec: FeatureSpec, path: str, comparison: dict, plot_path: str | None = None) -> str:
    """Writes the comparison alone as a self-contained page at ``path``; returns it."""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(spec.name)}: comparison</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(spec.name)}: model comparison</h1>
{comparison_section(comparison, plot_path)}
</body></html>
"""
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(page)
    return path


def write_report(spec: FeatureSpec, workdir: Workdir, history: dict, metrics: dict,
                 comparison: dict | None = None, comparison_plot: str | None = None) -> str:
    """Writes ``model/report.html``; returns its path.

    Args:
        spec: the spec trained with. history: metric -> per-epoch values. metrics: the run's
            ``metrics.json`` dict, with ``baselines`` (architecture -> metrics) when trained.
        comparison: a ``compare.json`` dict (``mmoe compare``), shown as its own section.
        comparison_plot: its paired-differences plot.
    """
    rows = {f"{spec.model.architecture} (this run)": metrics, **metrics.get("baselines", {})}
    training = metrics.get("training", {})
    best = (
        f"<p>Kept the model of epoch {training['best_epoch']} of {training['epochs']}"
        + (f" (step {training['best_step']})" if "best_step" in training else "") + ", the best by "
        f"<code>{html.escape(training['early_stopping_metric'])}</code> ({training['best_value']:.4f}).</p>"
        if "best_epoch" in training and "early_stopping_metric" in training else ""
    )
    figures = "".join(_image(path, caption) for path, caption in plots(workdir))
    plain = spec.to_dict()
    config = json.dumps({key: plain[key] for key in ("model", "training", "tasks", "ranking")}, indent=2)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(spec.name)}: training report</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(spec.name)}: training report</h1>
<h2>Eval metrics</h2>{metric_table(spec, rows)}{best}
<h2>Plots</h2>{figures}
{comparison_section(comparison, comparison_plot) if comparison else ""}
<h2>History</h2>{history_table(history)}
<h2>Configuration</h2><pre>{html.escape(config)}</pre>
</body></html>
"""
    path = workdir.report_html
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(page)
    return path
