"""Writes a proposed spec as YAML text, every entry in flow style with its reason as a comment
above it, in a form PyYAML reads back to the same values and types.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping, Sequence

from feature_specs.column_choices import ColumnChoice
from feature_specs.sample import Sample
from feature_specs.table_choices import TablePlan
from feature_specs.task_choices import LabelPlan, task_entry

_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def flow_scalar(value: Any) -> str:
    """One YAML scalar that PyYAML reads back as the same value and type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(float(f"{value:.6g}"))
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    text = str(value)
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def flow(mapping: Mapping[str, Any]) -> str:
    parts = []
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            parts.append(f"{key}: {flow(value)}")
        elif isinstance(value, (list, tuple)):
            parts.append(f"{key}: [{', '.join(flow_scalar(v) for v in value)}]")
        else:
            parts.append(f"{key}: {flow_scalar(value)}")
    return "{" + ", ".join(parts) + "}"


def comment(text: str, indent: str = "") -> str:
    """``text`` as YAML comment lines of at most about 100 characters."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + len(word) + 1 > 96:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(f"{indent}# {l}" for l in lines)


def render_spec(name: str, sample: Sample, choices: list[ColumnChoice], plans: list[LabelPlan],
            label_entries: list[dict], ranking: dict, split: dict, ranking_why: str, split_why: str,
            model: dict, training: dict, model_why: str, declared_extra: list[dict],
            tables: Sequence[TablePlan] = ()) -> str:
    """The YAML text of the spec, a comment above every entry; ``tables`` add their features
    (after the log's) and the ``tables:`` section."""
    files = sample.files[0] if len(sample.files) == 1 else f"{sample.path} ({len(sample.files)} files)"
    rows = f"all {len(sample.rows):,} rows" if sample.exhausted else f"the first {len(sample.rows):,} rows"
    out = [
        f"# Proposed by `mmoe spec infer` from {rows} of {files}.",
        "# Every choice is explained in the comment above it; check them, then run:",
        f"#   mmoe run --spec <this file> --input '{sample.path}'",
        f"name: {flow_scalar(name)}",
        "description: " + json.dumps(f"Inferred from {os.path.basename(sample.path)}: tasks "
                                     + ", ".join(p.task for p in plans)),
        "",
        "features:",
    ]
    for choice in choices:
        if choice.role in ("feature", "bias"):
            out.append(comment(f"{choice.name}: {choice.reason}", "  "))
            out.append(f"  - {flow(choice.entry)}")
    for table in tables:
        out.append(f"  # looked up from table {table.name} by {table.key} (tables: below holds their types and checks)")
        for choice in table.features:
            out.append(comment(f"{choice.name}: {choice.reason}", "  "))
            out.append(f"  - {flow(choice.entry)}")
    excluded = [c for c in choices if c.role == "excluded"]
    if excluded:
        out.append("")
        out.append("# Left out (undeclared columns are ignored by the pipeline and counted in report.json):")
        for choice in excluded:
            out.append(comment(f"{choice.name} ({choice.dtype or 'no type'}, {choice.flag}): {choice.reason}"))
    out += table_section(tables)
    out += ["", "columns:"]
    for entry in declared_extra:
        out.append(comment(entry.pop("_why"), "  "))
        out.append(f"  - {flow(entry)}")
    for plan, entry in zip(plans, label_entries):
        bounds = ("min 0, max 1: validation rejects rows with any other value" if plan.kind == "binary"
                  else "min 0: validation rejects negative values" if entry.get("min") == 0 else "no bounds")
        optional = ("; missing only where not observed (the mask is 0): filled with 0"
                    if entry.get("required") is False else "")
        out.append(comment(f"{plan.column}: label of task {plan.task}; {bounds}{optional}", "  "))
        out.append(f"  - {flow(entry)}")
    out += ["", "tasks:"]
    for plan in plans:
        task = task_entry(plan)
        out.append(comment(f"{plan.reason}; loss weight {task['weight']} (raise it to favour this task)", "  "))
        out.append(f"  - {flow(task)}")
    out += ["", comment(ranking_why), f"ranking: {flow(ranking)}", "",
            comment(split_why), f"split: {flow(split)}", "",
            comment(model_why), f"model: {flow(model)}", f"training: {flow(training)}", ""]
    return "\n".join(out)


def table_section(tables: Sequence[TablePlan]) -> list[str]:
    """The ``tables:`` section's lines (none without tables): each table's join as a comment, its
    entry in block style, its columns' types and checks in flow style, what it leaves out."""
    if not tables:
        return []
    out = ["", "tables:"]
    for table in tables:
        out.append(comment(table.reason, "  "))
        entry = table.entry()
        out.append(f"  - name: {flow_scalar(entry.pop('name'))}")
        out += [f"    {key}: {flow_scalar(value)}" for key, value in entry.items()]
        out.append("    columns:")
        out += [f"      - {flow(column)}" for column in table.columns]
        for choice in table.choices:
            if choice.role == "excluded":
                out.append(comment(f"left out {choice.name} ({choice.dtype or 'no type'}, {choice.flag}): "
                                   f"{choice.reason}", "    "))
    return out
