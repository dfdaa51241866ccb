"""The one exception type that the command line turns into a single error line."""


class AgecheckError(Exception):
    """A problem the user can fix (bad path, bad config, bad model), stated in one line.

    The CLI prints the message as ``Error: <message>`` and exits non-zero without a
    traceback. Programming errors are not wrapped in this type, so they keep theirs.
    """
