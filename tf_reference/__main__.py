"""`python -m tf_reference train|trace|bench --config configs/X.yaml [--data.root DIR ...]`.

    train  one run in one execution mode (eager, function, loop, xla, fit, fit-xla, fit-eager)
    trace  the traced train step's graph (and with --profile a profile) for TensorBoard
    bench  steady steps/s of several modes on the same model and data, as a markdown table

Config keys can be overridden LightningCLI-style: `--data.root DIR`, `--model.lr=0.05`,
`--trainer.max_epochs 3`. A mistake in the input prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from lightning_densenet.errors import UserError

# train.MODES, copied so that --help does not import TensorFlow (a test holds them equal).
_MODES = ("eager", "function", "loop", "xla", "fit", "fit-xla", "fit-eager")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tf_reference",
        description="The TensorFlow/Keras reference: training modes, traces and benchmarks.",
        epilog="Any config key can be set as --model.lr 0.05, --data.root DIR, ...",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", required=True, help="a YAML of configs/ or a preset name")
    common.add_argument("--model", default="densenet", choices=("densenet", "cnn", "mlp"))
    common.add_argument("--width", type=int, help="cnn/mlp width (default 32 / 512)")
    common.add_argument("--depth", type=int, help="cnn/mlp layers (default 6 / 2)")
    common.add_argument("--batch-size", type=int, help="overrides data.batch_size")
    common.add_argument(
        "--one-batch",
        action="store_true",
        help="train on the first batch over and over (overfit check; times the step alone)",
    )
    common.add_argument(
        "--threads", type=int, help="TensorFlow intra- and inter-op threads (default: all cores)"
    )

    train = commands.add_parser("train", parents=[common], help="train in one execution mode")
    train.add_argument("--mode", default="function", choices=_MODES)
    train.add_argument("--epochs", type=int, help="overrides trainer.max_epochs")
    train.add_argument("--steps", type=int, help="stop after this many steps (trainer.max_steps)")
    train.add_argument("--root-dir", default="runs", help="runs go to ROOT/tf/<name>/<mode>/")
    train.add_argument("--no-validate", action="store_true", help="skip validation and test")

    trace = commands.add_parser("trace", parents=[common], help="write a graph trace")
    trace.add_argument("--mode", default="function", choices=("function", "xla"))
    trace.add_argument("--logdir", help="default: runs/tf-trace/<name>")
    trace.add_argument("--profile", action="store_true", help="also record a profile")

    bench = commands.add_parser("bench", parents=[common], help="compare modes' steps/s")
    bench.add_argument("--modes", default=",".join(_MODES), help="comma-separated (default all)")
    bench.add_argument("--steps", type=int, default=50, help="steps per timed epoch")
    bench.add_argument(
        "--repeats", type=int, default=3, help="rounds, each training every mode afresh"
    )
    bench.add_argument("--out", help="also write the rows as JSON and the table as markdown")
    return parser


def parse_overrides(extra: list[str]) -> dict[str, Any]:
    """`--data.root DIR --model.lr=0.05` -> {"data.root": "DIR", "model.lr": 0.05}."""
    overrides: dict[str, Any] = {}
    items = iter(extra)
    for item in items:
        if not item.startswith("--") or "." not in item.split("=")[0]:
            raise UserError(f"Unrecognised argument {item!r}: see python -m tf_reference --help.")
        key, has_value, value = item[2:].partition("=")
        if not has_value:
            value = next(items, None)
            if value is None:
                raise UserError(f"--{key} needs a value.")
        overrides[key] = yaml.safe_load(value)  # "0.05" -> 0.05, "null" -> None, "[1, 2]" -> list
    return overrides


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = build_parser().parse_known_args(argv)
    try:
        return _run(
            args, parse_overrides(extra), command="python -m tf_reference " + " ".join(argv)
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, overrides: dict[str, Any], command: str) -> int:
    from tf_reference.config import load_experiment

    if args.batch_size is not None:
        overrides["data.batch_size"] = args.batch_size
    if args.command == "train":
        if args.epochs is not None:
            overrides["trainer.max_epochs"] = args.epochs
        if args.steps is not None:
            overrides["trainer.max_steps"] = args.steps
    exp = load_experiment(args.config, overrides)
    shape = {"model": args.model, "width": args.width, "depth": args.depth}

    # TensorFlow loads only now, once the arguments and the config are known to be good.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # keep C++ INFO lines out of the output
    from tf_reference.train import configure_threads

    configure_threads(args.threads)

    if args.command == "train":
        from tf_reference.train import train

        train(
            exp,
            args.mode,
            root_dir=args.root_dir,
            validate=not args.no_validate,
            one_batch=args.one_batch,
            **shape,
        )
    elif args.command == "trace":
        from tf_reference.trace import write_trace

        logdir = args.logdir or Path("runs") / "tf-trace" / exp.name
        out = write_trace(exp, logdir, mode=args.mode, profiler=args.profile, **shape)
        print(f"Wrote the {args.mode} train step's trace to {out}: tensorboard --logdir {out}")
    else:
        from tf_reference.bench import benchmark_modes, markdown_table
        from tf_reference.train import MODES

        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if unknown := [m for m in modes if m not in MODES]:
            raise UserError(f"--modes {unknown[0]!r} is unknown: use some of {', '.join(MODES)}.")
        if args.steps < 2 or args.repeats < 1:
            raise UserError("bench needs --steps of at least 2 and --repeats of at least 1.")
        rows = benchmark_modes(
            exp, modes, steps=args.steps, repeats=args.repeats, one_batch=args.one_batch, **shape
        )
        table = markdown_table(rows)
        print(table)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "modes.json").write_text(
                json.dumps({"command": command, "rows": rows}, indent=2) + "\n"
            )
            (out / "modes.md").write_text(f"`{command}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
