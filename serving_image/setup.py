"""Compiles the gRPC protocol while the wheel is built; everything else is in pyproject.toml.

grpcio-tools is a build requirement (pyproject.toml [build-system]), so pip installs it into the
isolated build environment only: the image gets the generated modules and not the compiler.
"""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithProto(build_py):
    """The usual build_py, then protoc on modelserver/proto into the build tree."""

    def run(self) -> None:
        super().run()
        spec = importlib.util.spec_from_file_location(
            "modelserver_proto_build", HERE / "modelserver" / "proto" / "build.py"
        )
        assert spec is not None and spec.loader is not None
        build = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(build)
        out = Path(self.build_lib) / build.PACKAGE_PATH
        build.compile_into(HERE / "modelserver" / "proto", out)


setup(cmdclass={"build_py": BuildPyWithProto})
