"""``ingestd doctor``: is this host ready to run ingestd, and if not, what to fix.

Each check returns a status (ok / warn / fail / skip), a one-line finding and, when
not ok, how to fix it. Checks talk to the real services (a real embeddings request, a
real authenticated LlamaParse request, a statsd datagram), each under a deadline, so a
hung service cannot hang the command. ``run_doctor`` is the entry point.
"""
