"""One exception type for bad input: the CLI turns it into one line and exit code 2."""


class UserError(Exception):
    """Bad input from the user (config, data file, model path). Printed as one line, exit code 2."""
