"""The Open Inference Protocol's gRPC messages and service, generated from grpc_predict_v2.proto.

``pb`` holds the messages and ``pb_grpc`` the service glue. In a source checkout the modules
are generated here on first import (see ``build``); an installed package carries them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .build import ensure

ensure(Path(__file__).parent)

# Imported by name: the modules may not exist until `ensure` made them, and a type checker in a
# clean checkout (nothing generated yet) must not fail on them.
pb: Any = importlib.import_module(f"{__name__}.grpc_predict_v2_pb2")
pb_grpc: Any = importlib.import_module(f"{__name__}.grpc_predict_v2_pb2_grpc")

__all__ = ["pb", "pb_grpc"]
