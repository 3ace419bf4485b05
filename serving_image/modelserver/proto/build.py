"""Compiling grpc_predict_v2.proto into Python modules with grpcio-tools.

Generated code is not committed: it is tied to the protobuf version that generated it, and a
committed copy would drift from the .proto. Instead it is generated where it is needed:

- the image (and any ``pip install serving_image/``): ``setup.py`` runs ``compile_into`` on the
  build tree while the wheel is built, with grpcio-tools from the build requirements, so the
  image carries the modules and never grpcio-tools;
- a source checkout (the dev venv, ``make test``): ``modelserver.proto`` calls ``ensure`` on
  first import, which compiles next to the .proto when the modules are missing or older than it.

Only the standard library and grpc_tools here: ``setup.py`` loads this file by path, before
anything of the package is installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PROTO = "grpc_predict_v2.proto"
MODULES = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2_grpc.py")
# The package path the generated modules import each other by: protoc writes
# ``from modelserver.proto import grpc_predict_v2_pb2`` when the .proto is named by this path.
PACKAGE_PATH = Path("modelserver") / "proto"


def compile_into(proto_dir: Path, out_dir: Path) -> None:
    """Write the generated modules for ``proto_dir``/PROTO into ``out_dir``.

    protoc runs in a temporary tree and the modules are moved into place one by one, so another
    process importing at the same moment sees the old modules or the new ones, never half a file.
    """
    from grpc_tools import protoc  # build-time only: grpcio-tools

    with tempfile.TemporaryDirectory(prefix="modelserver-proto-") as tmp:
        src = Path(tmp) / "src" / PACKAGE_PATH
        src.mkdir(parents=True)
        shutil.copy(proto_dir / PROTO, src / PROTO)
        include = str(Path(protoc.__file__).parent / "_proto")
        out = Path(tmp) / "out"
        out.mkdir()
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{Path(tmp) / 'src'}",
                f"-I{include}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                str(PACKAGE_PATH / PROTO),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed on {proto_dir / PROTO} (exit code {code})")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in MODULES:
            staged = out_dir / f".{name}.{os.getpid()}"
            shutil.copy(out / PACKAGE_PATH / name, staged)
            os.replace(staged, out_dir / name)


def is_current(proto_dir: Path) -> bool:
    """Whether the generated modules exist next to the .proto and are not older than it."""
    proto = proto_dir / PROTO
    if not proto.exists():  # an installed package: the modules were built with it
        return all((proto_dir / name).exists() for name in MODULES)
    mtime = proto.stat().st_mtime
    return all(
        (proto_dir / name).exists() and (proto_dir / name).stat().st_mtime >= mtime
        for name in MODULES
    )


def ensure(proto_dir: Path) -> None:
    """Compile in place when the modules are missing or stale (a source checkout)."""
    if is_current(proto_dir):
        return
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        raise ImportError(
            f"the gRPC modules of {proto_dir / PROTO} are not generated and grpcio-tools is not "
            "installed: install the modelserver package (pip install serving_image/) or "
            "grpcio-tools (the dev venv has it)"
        ) from None
    compile_into(proto_dir, proto_dir)
