"""Errors the CLI turns into a one-line message and an exit code instead of a traceback.

    sentiment train --batch-size 0   # -> "error: train.batch_size must be > 0, got 0", exit 2
"""


class UserError(Exception):
    """Something the user asked for cannot be done as asked (exit code 2).

    The message is one line that says what was wrong and how to fix it.
    """

    exit_code = 2


class TrainingError(Exception):
    """Training started but could not finish (exit code 1), e.g. a non-finite loss."""

    exit_code = 1
