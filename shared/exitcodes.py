"""Every ingestd process's exit codes, in one place: the children set them, the
supervisor reads them (``supervisor.children.classify``) and sets its own.

The children's codes come from sysexits.h, so a code means the same to systemd and
to an operator as to the supervisor.
"""

from __future__ import annotations

EXIT_OK = 0
# Work failed (for the supervisor: ``run --drain`` saw documents die waiting on a service).
EXIT_FAILED = 1
# The supervisor only: it gave up after a crash loop (systemd's Restart= decides next).
EXIT_CRASH_LOOP = 1
# A service the work needs cannot be reached (the database, the embedding API, the parser API).
EXIT_UNREACHABLE = 3
# EX_SOFTWARE: an unexpected exception, already logged and sent to Sentry by the child.
EXIT_CRASH = 70
# EX_CONFIG: respawning cannot help; the supervisor stops with it too.
EXIT_CONFIG = 78
