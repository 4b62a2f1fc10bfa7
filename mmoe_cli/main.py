"""`mmoe`: the command line. Each sub-command runs one stage from the previous stage's artifacts.

    mmoe run        generate (or read) raw logs -> preprocess -> train -> evaluate -> export
    mmoe generate   write a synthetic impression log (Parquet or CSV)
    mmoe preprocess Beam pipeline: validate, split, analyze, write TFRecords + artifacts
    mmoe train      train the MMoE on data/, evaluate on the eval split, write metrics.json
    mmoe evaluate   recompute metrics.json from the trained model
    mmoe export     write the SavedModel to <workdir>/export/<spec name>/<version>/
    mmoe serve      REST server: TF Serving's predict API plus :rank, batching, hot reload
    mmoe compare    train several architectures over several seeds, paired verdicts per task
    mmoe spec       propose a spec for a new log (infer), check a spec and data against it (check)

Flags: mmoe_cli/flags.py; the stages: mmoe_cli/stages.py; `mmoe spec`: mmoe_cli/spec_commands.py;
what reaches the console: mmoe_cli/console.py. Nothing imports this package.

A user's mistake (any :class:`feature_specs.errors.UserError`, from any stage, or a missing file)
is printed as one line, ``mmoe: <message>``, and exits with the error's ``exit_code`` (2 for bad
input, 1 for a run that failed a check); ``--debug`` shows its traceback instead. Every other
exception is a defect and keeps its traceback.
"""

from __future__ import annotations

import sys

from feature_specs.errors import UserError
from feature_specs.spec import SpecError
from mmoe_cli.compare_command import cmd_compare
from mmoe_cli.console import configure_logging, start_tensorflow_quietly
from mmoe_cli.flags import build_parser, dashed_spelling, option_strings
from mmoe_cli.spec_commands import cmd_spec
from mmoe_cli.stages import cmd_evaluate, cmd_export, cmd_generate, cmd_preprocess, cmd_run, cmd_serve, cmd_train

COMMANDS = {
    "run": cmd_run, "generate": cmd_generate, "preprocess": cmd_preprocess, "train": cmd_train,
    "evaluate": cmd_evaluate, "export": cmd_export, "serve": cmd_serve, "spec": cmd_spec,
    "compare": cmd_compare,
}
BEAM_COMMANDS = ("run", "preprocess")
TENSORFLOW_COMMANDS = ("run", "preprocess", "train", "evaluate", "export", "serve", "compare")
FILE_NOT_FOUND_EXIT_CODE = UserError.exit_code  # a missing input file is a bad input too


def runs_tensorflow_here(args) -> bool:
    """Whether the command imports TensorFlow in this process (``serve --workers N`` with N > 1
    only supervises: the workers import it, each started quietly by its initializer)."""
    if args.command == "serve":
        return args.workers <= 1
    return args.command in TENSORFLOW_COMMANDS


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mmoe` console script; returns the process exit code."""
    parser = build_parser()
    argv = dashed_spelling(sys.argv[1:] if argv is None else list(argv), option_strings(parser))
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in BEAM_COMMANDS:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logging(args.verbose)
    if runs_tensorflow_here(args):
        start_tensorflow_quietly(args.verbose)
    try:
        return COMMANDS[args.command](args, extra)
    except (UserError, FileNotFoundError) as exc:  # a mistake the user can fix; any other error is a bug
        if args.debug:
            raise
        print(f"mmoe: {user_message(exc)}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, UserError) else FILE_NOT_FOUND_EXIT_CODE


def user_message(exc: Exception) -> str:
    """What ``mmoe`` prints for a user's mistake: one line (a message's later lines joined with
    ``; ``), a spec's problem as ``invalid spec: <file>: <key path>: <problem>``.

    Args:
        exc: a :class:`~feature_specs.errors.UserError` or :class:`FileNotFoundError`.
    """
    message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    return f"invalid spec: {message}" if isinstance(exc, SpecError) else message


if __name__ == "__main__":
    sys.exit(main())
