"""User-facing errors: the CLI prints one line and exits with code 2."""


class PopSteerError(Exception):
    """Bad input from the user (flag, file, checkpoint, environment).

    The CLI catches it, prints ``error: <message>`` on one line and exits with code 2.
    """
