"""The master process: CLI, supervisor loop, child bookkeeping, HTTP child."""
