"""`mmoe`: the command line. Each sub-command runs one stage from the previous stage's artifacts.

    mmoe run        generate (or read) raw logs -> preprocess -> train -> evaluate -> export
    mmoe generate   write a synthetic impression log (Parquet or CSV)
    mmoe preprocess Beam pipeline: validate, split, analyze, write TFRecords + artifacts
    mmoe train      train the MMoE on data/, evaluate on the eval split, write metrics.json
    mmoe evaluate   recompute metrics.json from the trained model
    mmoe export     write the SavedModel to <workdir>/export/<spec name>/<version>/
    mmoe serve      REST server: TF Serving's predict API plus :rank, batching, hot reload
    mmoe spec       propose a spec for a new log (infer), check a spec and data against it (check)

Flags: mmoe_cli/flags.py; the stages: mmoe_cli/stages.py; `mmoe spec`: mmoe_cli/spec_commands.py;
what reaches the console: mmoe_cli/console.py. Nothing imports this package.
"""

from __future__ import annotations

import sys

from mmoe_cli.console import configure_logging, start_tensorflow_quietly
from mmoe_cli.flags import build_parser, dashed_spelling, option_strings
from mmoe_cli.spec_commands import cmd_spec
from mmoe_cli.stages import cmd_evaluate, cmd_export, cmd_generate, cmd_preprocess, cmd_run, cmd_serve, cmd_train

COMMANDS = {
    "run": cmd_run, "generate": cmd_generate, "preprocess": cmd_preprocess, "train": cmd_train,
    "evaluate": cmd_evaluate, "export": cmd_export, "serve": cmd_serve, "spec": cmd_spec,
}
BEAM_COMMANDS = ("run", "preprocess")
TENSORFLOW_COMMANDS = ("run", "preprocess", "train", "evaluate", "export", "serve")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mmoe` console script; returns the process exit code."""
    parser = build_parser()
    argv = dashed_spelling(sys.argv[1:] if argv is None else list(argv), option_strings(parser))
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in BEAM_COMMANDS:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logging(args.verbose)
    if args.command in TENSORFLOW_COMMANDS:
        start_tensorflow_quietly(args.verbose)
    from feature_specs.spec import SpecError

    try:
        return COMMANDS[args.command](args, extra)
    except SpecError as exc:
        print(f"mmoe: invalid spec: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:  # a missing input, a bad flag value or file
        if args.verbose:
            raise
        print(f"mmoe: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
