"""Project exceptions: an InputError carries a one-line message naming the file and the problem."""


class InputError(Exception):
    """Bad user input (a missing, corrupt or incompatible file); the CLI prints it and exits 1."""
