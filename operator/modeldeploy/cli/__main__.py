"""`python -m modeldeploy.cli` is `kubectl modeldeploy`."""

import sys

from . import main

sys.exit(main())
