"""Does a setting help? Paired differences between two `mmoe compare` runs of the same seeds.

`mmoe compare` pairs models within one setting; this pairs one setting against another for each
model both ran, seed by seed (the same seeds give the same initialization and shuffling), with
the same 95% t-intervals and outcomes (:mod:`mmoe.paired`):

    mmoe compare runs/x --seeds 3 && cp runs/x/compare.json /tmp/before.json
    mmoe compare runs/x --seeds 3 --set tasks.engagement.weight=0.05 && cp runs/x/compare.json /tmp/after.json
    .venv/bin/python benchmarks/compare_settings.py /tmp/before.json /tmp/after.json

Prints a Markdown table: per model and task, the headline metric before and after (mean ± sd)
and the paired change with its interval and outcome (``better`` means the second setting wins).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from mmoe.paired import compare_metric, metric_rule  # noqa: E402


def setting_table(before: dict, after: dict) -> str:
    """Markdown: one row per model both comparisons ran and task, on the tasks' headline metrics."""
    if before["seeds"] != after["seeds"]:
        raise SystemExit(f"the two comparisons ran different seeds: {before['seeds']} and {after['seeds']}")
    lines = ["| model | task | metric | before | after | after − before [95% CI] |", "|---|---|---|---|---|---|"]
    for model in (m for m in after["models"] if m in before["models"]):
        for task, metric in after["headline"].items():
            a, b = before["models"][model][task][metric], after["models"][model][task][metric]
            result = compare_metric(b, a, metric_rule(metric))
            lines.append(
                f"| {model} | {task} | {metric} | {np.mean(a):.4f} ± {np.std(a, ddof=1):.4f} | "
                f"{np.mean(b):.4f} ± {np.std(b, ddof=1):.4f} | {result['mean']:+.4f} "
                f"[{result['low']:+.4f}, {result['high']:+.4f}] {result['outcome']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="compare.json of the first setting")
    parser.add_argument("after", help="compare.json of the second setting (same seeds)")
    args = parser.parse_args(argv)
    with open(args.before) as handle:
        before = json.load(handle)
    with open(args.after) as handle:
        after = json.load(handle)
    print(setting_table(before, after))


if __name__ == "__main__":
    main()
