"""The one exception type users see.

Every failure a user can cause or fix (a bad config value, a truncated checkpoint, a
corrupt cache file, an unreachable remote) is raised as a ``TrtcasError`` whose message is
a single line naming the thing and what to do. The CLI prints it without a traceback and
exits non-zero; anything else escaping is a bug and keeps its traceback.
"""


class TrtcasError(Exception):
    """A user-facing error with a one-line, actionable message."""
