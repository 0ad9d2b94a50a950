"""User-facing errors: one line naming the problem and the fix. The CLI prints them without a traceback."""


class UserError(Exception):
    """Bad input or an unreachable resource; the message says what is wrong and how to fix it."""


class Interrupted(UserError):
    """Ctrl-C during a long run; the message says what was kept and how to resume. The CLI exits 130."""
