"""Builds the attnsearch package: its gRPC stubs are generated from the
repository's proto (../../proto) with protoc and grpc_python_plugin when the
package is built, so they always match the server it ships with."""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTO = "attnsearch/v1/search.proto"


def generate(out_dir):
    """Writes attnsearch/v1/search_pb2.py and search_pb2_grpc.py under out_dir."""
    protoc = shutil.which("protoc")
    plugin = shutil.which("grpc_python_plugin")
    if protoc is None or plugin is None:
        raise RuntimeError(
            "building attnsearch needs protoc and grpc_python_plugin "
            "(Debian: protobuf-compiler, protobuf-compiler-grpc)")
    if not os.path.exists(os.path.join(PROTO_ROOT, PROTO)):
        raise RuntimeError(f"{PROTO} not found under {PROTO_ROOT}: build from the repository")
    subprocess.run([protoc, "-I", PROTO_ROOT, f"--python_out={out_dir}",
                    f"--grpc_python_out={out_dir}",
                    f"--plugin=protoc-gen-grpc_python={plugin}", PROTO], check=True)
    package = os.path.join(out_dir, "attnsearch", "v1")
    open(os.path.join(package, "__init__.py"), "a").close()


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        generate(self.build_lib)


# The stubs' package exists in the source tree only as this marker, so that
# setuptools knows it; its modules come from generate().
os.makedirs(os.path.join(HERE, "attnsearch", "v1"), exist_ok=True)
setup(cmdclass={"build_py": BuildWithStubs})
