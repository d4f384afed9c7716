"""Every ingestd exit code, in one place: the command line's, the daemon's, and the
children's (the children set theirs, the supervisor reads them in
``supervisor.children.classify`` and sets its own).

The command line's codes are the conventional ones (2 for usage, as argparse itself
exits; 130 for Ctrl-C, as a shell reports it); the children's come from sysexits.h, so
a code means the same to systemd and to an operator as to the supervisor. The README's
"Exit codes" table is this module, for people.
"""

from __future__ import annotations

EXIT_OK = 0
# Work failed (a document failed or died under --wait, a file was rejected; for
# `run --drain`, documents died waiting on a service), nothing matched the id given, or a
# check failed.
EXIT_FAILED = 1
# The supervisor only: it gave up after a crash loop (systemd's Restart= decides next).
EXIT_CRASH_LOOP = 1
# The command line: a bad command line (argparse exits 2 too) or a bad configuration.
EXIT_USAGE = 2
# A service the command needs cannot be reached (the database, the embedding API, the
# parser API; for `run --drain`, only work waiting on such a service is left); trying
# again later may work, the configuration is fine.
EXIT_UNREACHABLE = 3
# EX_SOFTWARE: an unexpected exception, already logged and sent to Sentry by the child
# (the command line prints one line and logs the traceback at debug level).
EXIT_CRASH = 70
# EX_CONFIG: respawning cannot help; the supervisor stops with it too.
EXIT_CONFIG = 78
# 128 + SIGINT: interrupted at the terminal.
EXIT_INTERRUPTED = 130
# 128 + SIGPIPE: the reader of the command's output went away (`| head`), as for any
# Unix tool; quietly, no traceback.
EXIT_BROKEN_PIPE = 141
