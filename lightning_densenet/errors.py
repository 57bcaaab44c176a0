"""The one exception type for mistakes a user can make (bad config, missing data, wrong file)."""


class UserError(Exception):
    """A mistake in the user's input. The CLIs print its message as one line and exit 2."""
