"""The one exception type the command line turns into a single line and exit code 2."""


class UsageError(Exception):
    """Bad input from a user: the message says what was wrong and what was expected."""
