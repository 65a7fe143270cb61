"""Project exceptions: each carries a one-line message naming the file and the problem; the CLI exits 1."""


class InputError(Exception):
    """Bad user input (a missing, corrupt or incompatible file); the CLI prints it and exits 1."""


class StepError(Exception):
    """A processing step failed; the message names the subject, the step and the file."""
