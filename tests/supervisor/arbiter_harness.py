"""Run a real Arbiter in this process, a subprocess of the test, so that its signals
and forks are real. argv[1]: JSON {"worker": fake name | "real", "http": fake name | null,
"overrides": {...}, "config": path | null, "drain": bool}."""

from __future__ import annotations

import json
import sys

from ingestd.shared.settings import load_settings
from ingestd.supervisor.arbiter import Arbiter


def main() -> int:
    spec = json.loads(sys.argv[1])
    import arbiter_fakes

    target = None if spec["worker"] == "real" else getattr(arbiter_fakes, spec["worker"])
    http = spec.get("http")  # None: no HTTP child; "real": supervisor.http.app
    http_target = getattr(arbiter_fakes, http) if http not in (None, "real") else None
    overrides = spec.get("overrides", {})
    config = spec.get("config")
    settings = load_settings(config, **overrides)
    arbiter = Arbiter(
        settings,
        config_path=config,
        drain=spec.get("drain", False),
        worker_target=target,
        with_http=http is not None,
        http_target=http_target,
        reload_overrides=overrides,
    )
    return arbiter.run()


if __name__ == "__main__":
    sys.exit(main())
