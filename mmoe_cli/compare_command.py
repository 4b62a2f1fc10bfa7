"""`mmoe compare WORKDIR`: train several architectures over several seeds and compare them paired.

    mmoe compare runs/clicklog --models mmoe,shared_bottom,single_task,ple --seeds 3 [--epochs E]

Only argparse and the module's defaults at import time (no TensorFlow): ``mmoe compare --help``
stays instant. The work is :func:`mmoe.compare.run_comparison`; the tables are
:mod:`mmoe.compare_tables`; the HTML section is :func:`mmoe.report.comparison_section`.
"""

from __future__ import annotations

import argparse
import json

from feature_specs.errors import UserError
from feature_specs.spec import MAX_EPOCHS
from mmoe.architectures import ARCHITECTURES
from mmoe.compare import BASELINE, COMPARE_JSON, DEFAULT_MODELS, DEFAULT_SEEDS
from mmoe_cli.flag_types import int_in

DEFAULT_WORKDIR = "runs/clicklog"
MAX_SEEDS = 100


def architecture_list(text: str) -> tuple[str, ...]:
    """``mmoe,shared_bottom`` -> ``("mmoe", "shared_bottom")``; each must be an architecture."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in ARCHITECTURES]
    if not names or unknown:
        problem = f"unknown architecture {unknown[0]!r}" if unknown else "no architecture given"
        raise argparse.ArgumentTypeError(f"{problem}; expected a comma-separated list of {', '.join(ARCHITECTURES)}")
    return names


def add_compare_parser(commands) -> argparse.ArgumentParser:
    """Adds ``mmoe compare`` to the ``mmoe`` sub-command parsers (``add_subparsers()``'s result)."""
    compare = commands.add_parser(
        "compare", help="train several architectures over several seeds on one workdir and compare them, paired by seed",
        description="Trains each architecture once per seed with the same loop, budget (the spec's training "
        "settings) and seeds, evaluates each on the eval split, and reports per task the mean, the spread and "
        f"the paired difference against {BASELINE} (and of each gated model against shared_bottom) with a 95% "
        f"t-interval, a seesaw verdict and the gates' specialisation. Writes <workdir>/{COMPARE_JSON}, "
        "<workdir>/model/compare.html, and a section of <workdir>/model/report.html when the workdir holds a "
        "trained model.")
    compare.add_argument("workdir", nargs="?", default=DEFAULT_WORKDIR, metavar="WORKDIR",
                         help=f"a preprocessed run directory (default: {DEFAULT_WORKDIR})")
    compare.add_argument("--models", type=architecture_list, default=DEFAULT_MODELS, metavar="A,B,...",
                         help=f"architectures, comma-separated; {BASELINE} is added when missing "
                         f"(default: {','.join(DEFAULT_MODELS)})")
    compare.add_argument("--seeds", type=int_in(2, MAX_SEEDS), default=DEFAULT_SEEDS,
                         help="seeds per model, from the spec's training.seed up; at least 2 for an interval "
                         f"(default: {DEFAULT_SEEDS})")
    compare.add_argument("--epochs", type=int_in(1, MAX_EPOCHS), default=None,
                         help="epochs for every model (default: the spec's training.epochs)")
    compare.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="settings",
                         help="change a setting of the workdir's spec for every model, as in a spec file, e.g. "
                         "model.gate_temperature=0.5, training.loss_weighting=uncertainty or "
                         "tasks.engagement.weight=1.0 (repeatable; the data is not re-made)")
    return compare


def cmd_compare(args, beam_args: list[str]) -> int:
    import logging

    import tensorflow as tf

    from feature_specs.artifacts import Workdir
    from feature_specs.spec_reader import spec_from_dict
    from mmoe.architectures import check_architecture
    from mmoe.compare import compare_json_path, compare_report_path, run_comparison, with_settings
    from mmoe.compare_tables import comparison_markdown
    from mmoe.data import require_preprocessed
    from mmoe.plots import plot_paired_differences
    from mmoe.report import write_comparison_report, write_report

    workdir = Workdir(args.workdir)
    require_preprocessed(workdir)
    if not tf.io.gfile.exists(workdir.spec_json):
        raise UserError(f"{workdir.spec_json} is missing: run `mmoe preprocess --workdir {args.workdir}` first")
    with tf.io.gfile.GFile(workdir.spec_json) as handle:
        spec = check_architecture(spec_from_dict(json.load(handle), source=workdir.spec_json))
    spec = with_settings(spec, args.settings)
    if not args.verbose:  # one line per run; each run's epochs and tf.function retracing notes are noise here
        logging.getLogger("mmoe.loop").setLevel(logging.WARNING)
        tf.get_logger().setLevel(logging.ERROR)
    comparison = run_comparison(spec, workdir, models=args.models, seeds=args.seeds, epochs=args.epochs)
    tf.io.gfile.makedirs(workdir.plots_dir)
    plot = plot_paired_differences(comparison, f"{workdir.plots_dir}/compare.png")
    page = write_comparison_report(spec, compare_report_path(workdir), comparison, plot)
    if tf.io.gfile.exists(workdir.history_json) and tf.io.gfile.exists(workdir.metrics_json):
        with tf.io.gfile.GFile(workdir.history_json) as handle:
            history = json.load(handle)
        with tf.io.gfile.GFile(workdir.metrics_json) as handle:
            metrics = json.load(handle)
        write_report(spec, workdir, history, metrics, comparison, plot)
        page += f" and {workdir.report_html}"
    print("\n" + comparison_markdown(comparison))
    print(f"{compare_json_path(workdir)}; report: {page}")
    return 0
