"""``python -m modelserver``: serve one model, no Kubernetes needed."""

from __future__ import annotations

import logging
import os
import sys

from .config import ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        print(f"modelserver: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .server import serve

    try:
        return serve(settings)
    except ConfigError as exc:
        logging.getLogger("modelserver").error("configuration error: %s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
