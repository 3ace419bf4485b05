"""`python -m modeldeploy`: run the operator with settings from MODELDEPLOY_* variables."""

from __future__ import annotations

import sys

from .config import OperatorConfig


def main() -> int:
    try:
        config = OperatorConfig.from_env()
    except ValueError as error:
        print(f"modeldeploy: {error}", file=sys.stderr)
        return 2
    from .handlers import run

    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
