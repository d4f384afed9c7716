"""Pure logic and shared adapters used by both the supervisor and the workers.

Nothing in this package imports ``workers`` or ``supervisor``.
"""
