"""What the tests that signal a child process (the CLI in a real subprocess) start it with."""

from __future__ import annotations

import functools
import signal

#: ``preexec_fn`` of such a child: its Ctrl-C acts as in a terminal even when the tests run in the
#: background (a background shell job starts with SIGINT ignored, and Python keeps it ignored).
SIGINT_DEFAULT = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
