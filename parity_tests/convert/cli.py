"""`python -m parity_tests.convert SRC DST [--arch NAME] [--num-classes N] [--api ...]`."""

from __future__ import annotations

import argparse

from lightning_densenet.errors import command
from parity_tests.convert.port import convert


@command
def main(argv: list[str] | None = None) -> int:
    """Converts SRC to DST; a user's mistake ends in one `error:` line and exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m parity_tests.convert",
        description="Port DenseNet weights between PyTorch (.ckpt, .pt, .pth) and Keras "
        "(.keras, .weights.h5); the direction follows the file types.",
    )
    parser.add_argument("src", help="the file to read")
    parser.add_argument("dst", help="the file to write")
    parser.add_argument(
        "--arch",
        help="preset name or config YAML (its model.arch); needed for .weights.h5 sources, "
        "otherwise read from the checkpoint or the weight shapes",
    )
    parser.add_argument("--num-classes", type=int, help="classes (needed for .weights.h5)")
    parser.add_argument(
        "--api",
        choices=("functional", "sequential"),
        help="Keras model to build (default: functional; for .weights.h5 sources: try both)",
    )
    args = parser.parse_args(argv)
    print(convert(args.src, args.dst, arch=args.arch, num_classes=args.num_classes, api=args.api))
    return 0


__all__ = ["main"]
