"""The one exception type for mistakes a user can make (bad config, missing data, wrong file),
and the one place where a command turns it into an `error:` line and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec

P = ParamSpec("P")


class UserError(Exception):
    """A mistake in the user's input. The CLIs print its message as one line and exit 2."""


def command(main: Callable[P, int]) -> Callable[P, int]:
    """A command's `main`: a `UserError` becomes `error: <message>` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return wrapped
