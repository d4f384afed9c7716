"""The chaos and fault suite (``pytest -m chaos``): real daemons under crashes, database
and API outages and hostile input, each scenario checked against database invariants."""
