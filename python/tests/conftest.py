"""The pytest suite of the `lockstep` package (make test runs it on the
built wheel). A real `lockstepd` serves on loopback; its path comes from
LOCKSTEPD, the `lockstep` command's from LOCKSTEP (both from the cargo
target directory `make test` builds)."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
# The ONNX test models are the ones the Rust import tests use.
sys.path.insert(0, str(REPO / "firmware" / "cli" / "tests" / "onnx"))


def _binary(var):
    path = os.environ.get(var)
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"{var} must name the built binary (make test sets it)")
    return path


class Daemon:
    def __init__(self, process, addr, key):
        self.process = process
        self.addr = addr
        self.key = key


@pytest.fixture(scope="session")
def node(tmp_path_factory):
    """`lockstepd` on an ephemeral loopback port, CPU reference backend,
    serving uncertified (certification has its own tests)."""
    state = tmp_path_factory.mktemp("node-state")
    process = subprocess.Popen(
        [_binary("LOCKSTEPD"), "--listen", "127.0.0.1:0", "--backend", "cpu",
         "--state", str(state), "--file-key", "--uncertified"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = process.stdout.readline()
    prefix = "lockstepd listening on "
    if not line.startswith(prefix):
        process.kill()
        pytest.fail(f"lockstepd did not start: {line!r}")
    addr, key = line[len(prefix):].strip().split(" as ")
    yield Daemon(process, addr, key)
    process.kill()
    process.wait()


@pytest.fixture(scope="session")
def lockstep_cli():
    return _binary("LOCKSTEP")
