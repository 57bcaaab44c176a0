"""The argument parser of `python -m lightning_densenet`: a mistake ends in one `error:` line.

jsonargparse reports a bad value in several lines (for a union type, why each alternative
failed) and prints the whole usage text before it; here it is one sentence naming the key,
the value and what the key takes (`options.one_line`), and where to find the options.

jsonargparse (4.53) reports errors as text only: `ArgumentParser.error(message, ex)` gets the
exception, but it and its `__cause__` chain are plain TypeError/ValueError/KeyError whose
only content is the message. A union keeps only its first alternative's exception as the
cause (for `model.arch: str | DenseNetConfig` that is the `str` one, not our UserError), and
the key, the value and the type exist only as arguments of private methods, which a
command-line value (checked while argparse parses it) and a config-file value (checked in
`_check_value_key`) reach by different paths. So the sentence is read off the message.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from pytorch_lightning.cli import LightningArgumentParser

from lightning_densenet.options import one_line


class OneLineErrorParser(LightningArgumentParser):
    """A bad option or config key ends in one `error:` line, not the whole usage text."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse trying alternatives: let it go on
            super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write(f"error: {condense(str(message)).rstrip('.')} (see {prog} --help).\n")
        self.exit(2)


# How jsonargparse words an alternative of a union that failed its own type check.
_JSONARGPARSE_WORDS = ("Expected a", "Not of type", "Unexpected", "Missing required")


def condense(message: str) -> str:
    """jsonargparse's multi-line report of a bad value, as one sentence."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    # A union type lists why each alternative failed, one `- ` line each; the one that is not
    # jsonargparse's own type check is ours (a UserError) and says the most.
    alternatives = [x[2:] for x in lines if x.startswith("- ")]
    ours = [x for x in alternatives if not x.startswith(_JSONARGPARSE_WORDS)]
    return ours[0] if ours else one_line(message)
