"""``python -m tests.emulators openai|llamaparse ...``: an emulator in the foreground."""

from tests.emulators.cli import main

raise SystemExit(main())
