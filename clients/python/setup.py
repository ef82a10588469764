"""Generates herald_client/herald_pb2.py and herald_pb2_grpc.py from the repository's proto
before the package is built, so that the client always matches the server it is built with."""

import os
import re

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto")
PROTO = os.path.join("herald", "v1", "herald.proto")
OUT = os.path.join(HERE, "herald_client")


def generate():
    from grpc_tools import protoc

    if not os.path.exists(os.path.join(PROTO_ROOT, PROTO)):
        raise SystemExit(f"cannot find {PROTO} under {PROTO_ROOT}: build from the Herald repository")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["grpc_tools.protoc", f"-I{os.path.join(PROTO_ROOT, 'herald', 'v1')}", f"-I{include}",
            f"--python_out={OUT}", f"--grpc_python_out={OUT}", "herald.proto"]
    if protoc.main(args) != 0:
        raise SystemExit("generating the gRPC code failed")
    # The generated stub imports its messages as a top-level module: make it relative.
    stub = os.path.join(OUT, "herald_pb2_grpc.py")
    with open(stub) as f:
        text = f.read()
    with open(stub, "w") as f:
        f.write(re.sub(r"^import herald_pb2 as", "from . import herald_pb2 as", text, flags=re.M))


class BuildPy(build_py):
    def run(self):
        generate()
        super().run()


setup(cmdclass={"build_py": BuildPy})
