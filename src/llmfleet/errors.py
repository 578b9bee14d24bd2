"""The failure every command explains in one line: the message says what went wrong and what
to do. The CLI prints it without a traceback and exits 1."""


class LlmfleetError(RuntimeError):
    """A failure whose message is for the user."""
