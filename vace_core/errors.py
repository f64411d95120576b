"""User-facing errors: one exception type whose message says what was wrong and how to fix it."""


class VaceError(ValueError):
    """Bad input or a bad file. The message is written for the user; nodes show it as is."""
