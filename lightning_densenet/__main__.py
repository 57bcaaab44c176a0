"""`python -m lightning_densenet COMMAND ...`: which module runs each command.

    fit | validate | test | predict   LightningCLI (`cli.run_cli`)
    sweep                             an Optuna study of fit runs (`sweep.command`)
    runs | curves                     reading finished runs (`runs`, `curves`)

The dispatcher sits above everything it dispatches to, so none of them imports it.
"""

from __future__ import annotations

import sys

from lightning_densenet import curves, runs
from lightning_densenet.cli import run_cli
from lightning_densenet.errors import UserError, command
from lightning_densenet.summary import print_fit_summary


@command
def main(argv: list[str] | None = None) -> int:
    """Runs `argv` (None: sys.argv[1:]); a user's mistake ends in one `error:` line, exit 2."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "convert":  # moved above both frameworks, whose weights it ports
        raise UserError(
            "the weight port is now `python -m parity_tests.convert SRC DST` (same arguments)."
        )
    if args and args[0] == "sweep":
        # Here, not at the top: Optuna and SQLAlchemy load only for a sweep, not for every
        # fit (and every DDP process of one).
        from lightning_densenet.sweep import command as sweep

        return sweep.main(args[1:])
    if args and args[0] in ("runs", "curves"):  # reading runs, not training: no LightningCLI
        return (runs.main if args[0] == "runs" else curves.main)(args[1:])
    cli = run_cli(None if argv is None else args)  # None: LightningCLI reads sys.argv itself
    if cli.subcommand == "fit":
        print_fit_summary(cli.trainer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
