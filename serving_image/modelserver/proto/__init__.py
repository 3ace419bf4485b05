"""The Open Inference Protocol's gRPC messages and service, generated from grpc_predict_v2.proto.

``pb`` holds the messages and ``pb_grpc`` the service glue. In a source checkout the modules
are generated here on first import (see ``build``); an installed package carries them.
"""

from __future__ import annotations

from pathlib import Path

from .build import ensure

ensure(Path(__file__).parent)

from . import grpc_predict_v2_pb2 as pb  # noqa: E402
from . import grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: E402

__all__ = ["pb", "pb_grpc"]
