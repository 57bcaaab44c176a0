"""`python -m tf_reference train|trace --config configs/X.yaml [--data.root DIR ...]`.

    train  one run in one execution mode (eager, function, loop, xla, fit, fit-xla, fit-eager)
    trace  the traced train step's graph (and with --profile a profile) for TensorBoard

The config is read as LightningCLI reads it, by jsonargparse (`tf_reference.config`):
`--data.root DIR`, `--model.lr=0.05`, `--trainer.max_epochs 3`, `--print_config`. The modes'
speed side by side: `python -m parity_tests.speed --cases tf-eager,tf-function,...`.
A mistake in the input prints one line and exits with status 2.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser, Namespace

from lightning_densenet.errors import command
from lightning_densenet.options import PositiveInt
from tf_reference.config import Experiment, Mode, Network, experiment_from, experiment_parser, parse


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m tf_reference",
        description="The TensorFlow/Keras reference: training modes and traces.",
        exit_on_error=False,
    )
    commands = parser.add_subcommands(dest="command")
    train = _with_run_options(experiment_parser(description="Train in one execution mode."))
    train.add_argument("--mode", type=Mode, default="function")
    train.add_argument("--epochs", type=PositiveInt | None, help="overrides trainer.max_epochs")
    train.add_argument(
        "--steps", type=PositiveInt | None, help="stop after this many steps (trainer.max_steps)"
    )
    # Underscores, as in the config keys (--print_config, --data.batch_size); the hyphenated
    # spellings of earlier versions still work.
    train.add_argument(
        "--root_dir", "--root-dir", default="runs", help="runs go to ROOT/tf/<name>/<mode>/"
    )
    train.add_argument(
        "--no_validate", "--no-validate", action="store_true", help="skip validation and test"
    )
    commands.add_subcommand("train", train, help="train in one execution mode")

    trace = _with_run_options(experiment_parser(description="Write the train step's trace."))
    trace.add_argument("--mode", type=Literal["function", "xla"], default="function")
    trace.add_argument("--logdir", type=str | None, help="default: runs/tf-trace/<name>")
    trace.add_argument("--profile", action="store_true", help="also record a profile")
    commands.add_subcommand("trace", trace, help="write a graph trace")
    return parser


def _with_run_options(parser: ArgumentParser) -> ArgumentParser:
    """What a run trains and how, besides the config blocks."""
    parser.add_argument("--network", type=Network, default="densenet", help="what to train")
    parser.add_argument("--width", type=PositiveInt | None, help="cnn/mlp width (32 / 512)")
    parser.add_argument("--depth", type=PositiveInt | None, help="cnn/mlp layers (6 / 2)")
    parser.add_argument(
        "--batch_size", "--batch-size", type=PositiveInt | None, help="overrides data.batch_size"
    )
    parser.add_argument(
        "--one_batch",
        "--one-batch",
        action="store_true",
        help="train on the first batch over and over (overfit check; times the step alone)",
    )
    parser.add_argument(
        "--threads", type=PositiveInt | None, help="TensorFlow's thread pools (default: all cores)"
    )
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = parse(build_parser(), argv)
    return _run(cfg.command, cfg[cfg.command])


def _run(command: str, args: Namespace) -> int:
    exp = _with_shortcuts(experiment_from(args), args)
    shape = {"network": args.network, "width": args.width, "depth": args.depth}

    # TensorFlow loads only now, once the arguments and the config are known to be good.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # keep C++ INFO lines out of the output
    from tf_reference.train import configure_threads

    configure_threads(args.threads)
    if command == "train":
        from tf_reference.train import train

        train(
            exp,
            args.mode,
            root_dir=args.root_dir,
            validate=not args.no_validate,
            one_batch=args.one_batch,
            **shape,
        )
    else:
        from tf_reference.trace import write_trace

        logdir = args.logdir or Path("runs") / "tf-trace" / exp.name
        out = write_trace(exp, logdir, mode=args.mode, profiler=args.profile, **shape)
        print(f"Wrote the {args.mode} train step's trace to {out}: tensorboard --logdir {out}")
    return 0


def _with_shortcuts(exp: Experiment, args: Namespace) -> Experiment:
    """--batch_size, --epochs and --steps: short spellings of config keys."""
    data, trainer = exp.data, exp.trainer
    if args.batch_size is not None:
        data = dataclasses.replace(data, batch_size=args.batch_size)
    if args.get("epochs") is not None:
        trainer = dataclasses.replace(trainer, max_epochs=args.epochs)
    if args.get("steps") is not None:
        trainer = dataclasses.replace(trainer, max_steps=args.steps)
    return dataclasses.replace(exp, data=data, trainer=trainer)


if __name__ == "__main__":
    sys.exit(main())
