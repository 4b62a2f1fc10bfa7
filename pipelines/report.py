"""The run report: row counts computed inside the pipeline, checked and assembled afterwards.

The pipeline counts with Beam combiners and writes one JSON element (``Workdir.counts_prefix``
+ ``.json``); after it finishes, :func:`build_report` turns the counts into ``report.json`` and
:func:`finish_report` checks it (every input row accounted for: ``input_rows == written +
rejected``; the reject rate within its limit; rows in the train split) and records the verdict,
``"status"`` and ``"failure"``, which :func:`feature_specs.artifacts.preprocess_problem` reads.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import apache_beam as beam

from feature_specs.artifacts import PREPROCESS_COMPLETE, PREPROCESS_FAILED
from feature_specs.errors import UserError
from pipelines.records import MISSING_KEY, REASONS

COUNTS_SUFFIX = ".json"


class ReconciliationError(RuntimeError):
    """Input rows do not equal written plus rejected rows: some rows were lost or duplicated."""


class RejectRateError(UserError, RuntimeError):
    """More input rows were rejected than the run allows (``max_reject_rate``): the run completed
    and wrote its rejected rows, but its data must not be trained on."""

    exit_code = 1


class EmptyTrainSplitError(UserError, RuntimeError):
    """The run wrote no row to the train split, so there is nothing to train on (an input with
    only a header, every row rejected, or every row split to eval)."""


def counts_from_parts(parts):
    """Folds tagged ``(kind, key, count)`` parts into the counts document."""
    counts = {"input_rows": 0, "written": {"train": 0, "eval": 0}, "rejected_by_reason": {},
              "rejected_by_field": {}, "quality": None}
    for kind, key, count in parts:
        if kind == "input_rows":
            counts["input_rows"] = count
        elif kind == "written":
            counts["written"][key] = count
        elif kind == "by_reason":
            counts["rejected_by_reason"][key] = count
        elif kind == "by_field":
            counts["rejected_by_field"][key] = count
        elif kind == "extra":
            counts[key] = count
    for name in ("rejected_by_reason", "rejected_by_field"):  # the parts arrive in bundle order
        counts[name] = dict(sorted(counts[name].items()))
    return counts


class CountRows(beam.PTransform):
    """Counts input, rejected (per reason and per field) and written rows with Beam combiners.

    Applied to a dict of PCollections with keys ``input``, ``rejected``, ``train`` and ``eval``;
    any other key names a single-element PCollection (e.g. ``quality``, ``join``) that is put into
    the counts document under that key unchanged.

    Args:
        row_counts: bool. The ``input``, ``train`` and ``eval`` elements are row counts (one int
            per batch) to add up, instead of rows to count.

    Returns (from ``expand``):
        A single counts dict (see :func:`counts_from_parts`).
    """

    def __init__(self, row_counts: bool = False):
        super().__init__()
        self._row_counts = row_counts

    def _count(self):
        return beam.CombineGlobally(sum) if self._row_counts else beam.combiners.Count.Globally()

    def expand(self, pcolls):
        rejected = pcolls["rejected"]
        parts = (
            pcolls["input"]
            | "CountInput" >> self._count()
            | "TagInput" >> beam.Map(lambda n: ("input_rows", None, n)),
            pcolls["train"]
            | "CountTrain" >> self._count()
            | "TagTrain" >> beam.Map(lambda n: ("written", "train", n)),
            pcolls["eval"]
            | "CountEval" >> self._count()
            | "TagEval" >> beam.Map(lambda n: ("written", "eval", n)),
            rejected
            | "Reasons" >> beam.Map(lambda r: r.reason)
            | "CountReasons" >> beam.combiners.Count.PerElement()
            | "TagReasons" >> beam.MapTuple(lambda reason, n: ("by_reason", reason, n)),
            rejected
            | "Fields" >> beam.FlatMap(lambda r: [] if r.field is None else [r.field])
            | "CountFields" >> beam.combiners.Count.PerElement()
            | "TagFields" >> beam.MapTuple(lambda field, n: ("by_field", field, n)),
        )
        for key in sorted(set(pcolls) - {"input", "rejected", "train", "eval"}):
            parts += (pcolls[key] | f"Tag[{key}]" >> beam.Map(lambda value, key: ("extra", key, value), key),)
        return (
            parts
            | "Parts" >> beam.Flatten()
            | "Gather" >> beam.combiners.ToList()
            | "Assemble" >> beam.Map(counts_from_parts)
        )


def counts_json(counts: Mapping[str, Any]) -> str:
    # Not sorted: the data-quality summary lists columns in the spec's order.
    return json.dumps(counts, indent=2)


def build_report(counts: Mapping[str, Any], spec_name: str, input_pattern: str, seconds: float,
                 max_reject_rate: float = 1.0, mode: str = "analyze") -> dict:
    """Assembles ``report.json`` from the pipeline's counts.

    Args:
        counts: the counts document written by :class:`CountRows`.
        spec_name: str. The spec's name.
        input_pattern: str. The input file pattern.
        seconds: float. Wall time of the run.
        max_reject_rate: float. The run's threshold, recorded with the verdict.
        mode: str. ``analyze`` or ``reuse`` (artifacts taken from an earlier run).

    Returns:
        ``{"input_rows", "written": {"train", "eval", "total"}, "rejected": {"total",
        "by_reason", "by_field"}, "reject_rate", "max_reject_rate", "reject_rate_ok",
        "reconciled", "mode", "data_quality", "join", "tables", "spec", "input", "seconds"}``
        (``join``: the label join's counts, None without a ``sources:`` section; ``tables``: per
        side table its ``rows``, ``rejected_rows``, ``looked_up`` and ``missing_key`` counts and
        ``join``, None without ``tables:``); :func:`finish_report` adds the
        verdict (``status``, ``failure``). ``by_reason`` lists
        every reason, zeros included; ``data_quality`` is the profile summary (per column
        missing rate, distinct values, min/max; unknown columns; values outside reused artifacts).
    """
    input_rows = int(counts["input_rows"])
    train, eval_ = int(counts["written"]["train"]), int(counts["written"]["eval"])
    by_reason = {reason: 0 for reason in REASONS}
    if counts.get("tables"):
        by_reason[MISSING_KEY] = 0  # side tables: impressions whose key no table holds (missing_key: reject)
    by_reason.update({k: int(v) for k, v in counts["rejected_by_reason"].items()})
    rejected = sum(by_reason.values())
    reject_rate = rejected / input_rows if input_rows else 0.0
    return {
        "input_rows": input_rows,
        "written": {"train": train, "eval": eval_, "total": train + eval_},
        "rejected": {
            "total": rejected,
            "by_reason": by_reason,
            "by_field": dict(sorted((k, int(v)) for k, v in counts["rejected_by_field"].items())),
        },
        "reject_rate": reject_rate,
        "max_reject_rate": max_reject_rate,
        "reject_rate_ok": reject_rate <= max_reject_rate,
        "reconciled": input_rows == train + eval_ + rejected,
        "mode": mode,
        "data_quality": counts.get("quality"),
        "join": counts.get("join"),
        "tables": counts.get("tables"),
        "spec": spec_name,
        "input": input_pattern,
        "seconds": round(seconds, 3),
    }


def check_reconciled(report: Mapping[str, Any]) -> None:
    """Raises :class:`ReconciliationError` unless input rows equal written plus rejected rows."""
    if not report["reconciled"]:
        raise ReconciliationError(
            f"row counts do not reconcile: {report['input_rows']} input rows, but "
            f"{report['written']['total']} written + {report['rejected']['total']} rejected")


def check_reject_rate(report: Mapping[str, Any]) -> None:
    """Raises :class:`RejectRateError` when the reject rate is above the run's threshold."""
    if report["reject_rate_ok"]:
        return
    reasons = sorted(((n, r) for r, n in report["rejected"]["by_reason"].items() if n), reverse=True)
    fields = sorted(((n, f) for f, n in report["rejected"]["by_field"].items()), reverse=True)
    raise RejectRateError(
        f"{report['rejected']['total']:,} of {report['input_rows']:,} input rows "
        f"({report['reject_rate']:.2%}) were rejected, more than max_reject_rate "
        f"{report['max_reject_rate']:.2%} (the spec's pipeline.max_reject_rate or --max_reject_rate). "
        f"Top reasons: {', '.join(f'{r} {n:,}' for n, r in reasons[:3])}"
        + (f"; top fields: {', '.join(f'{f} {n:,}' for n, f in fields[:3])}" if fields else "")
        + ". See report.json and the rows under rejected/.")


def check_train_rows(report: Mapping[str, Any]) -> None:
    """Raises :class:`EmptyTrainSplitError` when no row was written to the train split."""
    if report["written"]["train"]:
        return
    rows = report["input_rows"]
    raise EmptyTrainSplitError(
        f"{report['input']}: no rows were written to the train split ({rows:,} input row(s), "
        f"{report['rejected']['total']:,} rejected, {report['written']['eval']:,} written to eval): "
        + ("the input holds no data rows, only headers or blank lines" if not rows
           else "see report.json and the rows under rejected/"))


def finish_report(report: dict) -> Exception | None:
    """Checks a report and records the verdict in it, so training can tell usable data from not.

    Sets ``report["status"]`` to :data:`~feature_specs.artifacts.PREPROCESS_COMPLETE`, or to
    :data:`~feature_specs.artifacts.PREPROCESS_FAILED` with ``report["failure"]`` (one line) for
    the first check that fails: rows that do not reconcile, a reject rate over the limit, an
    empty train split.

    Args:
        report: dict. A report from :func:`build_report`; updated in place.

    Returns:
        The failed check's exception (:class:`ReconciliationError`, :class:`RejectRateError` or
        :class:`EmptyTrainSplitError`), for the caller to raise once report.json is written; None
        when every check passes.
    """
    for check in (check_reconciled, check_reject_rate, check_train_rows):
        try:
            check(report)
        except (ReconciliationError, RejectRateError, EmptyTrainSplitError) as exc:
            report.update(status=PREPROCESS_FAILED, failure=" ".join(str(exc).split()))
            return exc
    report["status"] = PREPROCESS_COMPLETE
    return None


def format_table(report: Mapping[str, Any]) -> str:
    """A short human-readable table of a report's counts, then the data-quality table."""
    lines = [("input rows", report["input_rows"]),
             ("written train", report["written"]["train"]),
             ("written eval", report["written"]["eval"]),
             ("rejected", report["rejected"]["total"])]
    lines += [(f"  {reason}", n) for reason, n in report["rejected"]["by_reason"].items() if n]
    lines += [(f"  field {field}", n) for field, n in report["rejected"]["by_field"].items()]
    width = max(len(label) for label, _ in lines)
    rows = [f"{label:<{width}}  {value:>10,}" for label, value in lines]
    rate = f"{report['reject_rate']:.2%}"
    if "max_reject_rate" in report:
        rate += f" (max {report['max_reject_rate']:.2%}{'' if report['reject_rate_ok'] else ': FAIL'})"
    rows.append(f"{'reject rate':<{width}}  {rate:>10}")
    rows.append(f"{'reconciled':<{width}}  {'yes' if report['reconciled'] else 'NO':>10}")
    quality = report.get("data_quality")
    if quality:
        rows += ["", quality_table(quality)]
    return "\n".join(rows)


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return f"{int(value):,}" if abs(value) < 1e15 else f"{value:.4g}"


def quality_table(quality: Mapping[str, Any]) -> str:
    """The data-quality summary as a table: column, missing %, distinct, min, max, outside."""
    outside = quality.get("outside_artifacts", {})
    header = ("column", "missing", "distinct", "min", "max")
    if outside:
        header += ("outside artifacts",)
    table = [header]
    for name, entry in quality["columns"].items():
        distinct = entry.get("distinct")
        distinct = "" if distinct is None else f"{'' if entry['distinct_exact'] else '~'}{distinct:,}"
        line = (name, f"{entry['missing_rate']:.2%}", distinct, _number(entry.get("min")),
                _number(entry.get("max")))
        if outside:
            line += (f"{outside.get(name, 0):,}" if name in outside else "",)
        table.append(line)
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
            for line in table]
    for name, n in quality.get("unknown_columns", {}).items():
        text.append(f"unknown column {name!r} in {n:,} row(s)")
    return "\n".join(text)
