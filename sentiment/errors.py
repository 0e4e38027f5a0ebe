"""Errors the CLI turns into a one-line message and an exit code instead of a traceback.

sentiment train --batch-size 0   # -> "error: train.batch_size must be > 0, got 0", exit 2
"""


class UserError(Exception):
    """Something the user asked for cannot be done as asked (exit code 2).

    The message is one line that says what was wrong and how to fix it.
    """

    exit_code = 2


class TrainingError(Exception):
    """Training started but could not finish (exit code 1), e.g. a non-finite loss.

    ``tags`` are set on the run when it is marked FAILED (e.g. the step it failed at).
    """

    exit_code = 1

    def __init__(self, message: str, tags: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.tags = tags or {}


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; training saved its state first (exit 130 or 143).

    A BaseException like KeyboardInterrupt, so no ``except Exception`` swallows it, but not a
    KeyboardInterrupt, which click would turn into a bare "Aborted!".
    """

    def __init__(self, signum: int, resume_hint: str = "") -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.resume_hint = resume_hint

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
