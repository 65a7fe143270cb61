"""Project exceptions: each carries a one-line message naming the file and the problem; the CLI exits 1."""


class InputError(Exception):
    """Bad user input (a missing, corrupt or incompatible file); the CLI prints it and exits 1."""


class StepError(Exception):
    """A processing step failed; the message names the subject, the step and the file."""


def one_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none (a bare StopIteration)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def failure_line(error: BaseException) -> str:
    """How a failed participant or image is reported: our own errors as they are, others with their type."""
    if isinstance(error, (InputError, StepError)):
        return one_line(error)
    return f"{type(error).__name__}: {one_line(error)}"
