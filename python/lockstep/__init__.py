"""Lockstep from Python: run programs and ONNX models bit-reproducibly on
Vulkan or the CPU reference, submit them to a node, verify receipts.

    import lockstep, numpy as np
    outputs, trace = lockstep.run("model.onnx", {"x": x}, backend="cpu")
    node = lockstep.Node("127.0.0.1:7400", node_key)
    outputs, receipt = node.submit("model.onnx", {"x": x})
    lockstep.verify_receipt(receipt, node_key, outputs)

Every failure is a ``lockstep.LockstepError`` carrying the one line the
``lockstep`` command prints: ``InputError`` where the command exits 2 (bad
input), ``MachineError`` where it exits 1 (a machine problem).

Arrays go in as C-contiguous ``numpy.float32`` and are read from their
buffer directly; anything else is refused, never converted behind the
caller's back. Outputs come back as writable float32 arrays that view the
buffer the runtime wrote, without a copy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np

from . import _native
from ._native import InputError, LockstepError, MachineError, Program

__all__ = [
    "InputError",
    "LockstepError",
    "MachineError",
    "Node",
    "Program",
    "Receipt",
    "devices",
    "import_onnx",
    "load",
    "run",
    "verify_receipt",
]
__version__ = _native.__version__

# An ONNX model is a protobuf; a program is JSON or postcard. The suffix
# decides, as for the command (`lockstep import` takes .onnx files).
_ONNX_SUFFIX = ".onnx"

ProgramLike = Union[Program, str, os.PathLike, Mapping]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None


def load(path: Union[str, os.PathLike]) -> Program:
    """A program file (JSON or postcard), or an ONNX model if it ends in
    ``.onnx``."""
    path = Path(path)
    if path.suffix.lower() == _ONNX_SUFFIX:
        return import_onnx(path)
    return _native.load_program(_read(path), str(path))


def import_onnx(model: Union[str, os.PathLike, bytes]) -> Program:
    """An ONNX model (a path or its bytes) as a program that carries the
    model's weights, as ``lockstep import`` writes it."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return _native.import_onnx(bytes(model), "the model")
    path = Path(model)
    return _native.import_onnx(_read(path), str(path))


def _program(program: ProgramLike) -> Program:
    if isinstance(program, Program):
        return program
    if isinstance(program, Mapping):
        text = json.dumps(program).encode()
        return _native.load_program(text, "the program")
    if isinstance(program, (str, os.PathLike)):
        return load(program)
    raise InputError(
        f"program: a {type(program).__name__}; give a lockstep.Program, a path "
        "to a program or .onnx file, or a program as a dict"
    )


def _inputs(inputs: Mapping[str, np.ndarray], what: str = "input") -> dict:
    if not isinstance(inputs, Mapping):
        raise InputError(
            f"{what}s: a {type(inputs).__name__}; give a dict of name -> numpy.float32 array"
        )
    checked = {}
    for name, array in inputs.items():
        if not isinstance(name, str):
            raise InputError(f"{what} {name!r}: names are str")
        if not isinstance(array, np.ndarray):
            raise InputError(
                f"{what} '{name}': a {type(array).__name__}, not a numpy array"
            )
        if array.dtype != np.float32:
            raise InputError(
                f"{what} '{name}': dtype {array.dtype}; Lockstep computes in float32 "
                f"only: convert explicitly with x.astype(numpy.float32)"
            )
        if not array.flags.c_contiguous:
            raise InputError(
                f"{what} '{name}': not C-contiguous (a transposed or sliced view); "
                "give numpy.ascontiguousarray(x)"
            )
        if array.dtype.byteorder == ">":
            raise InputError(f"{what} '{name}': big-endian float32; give little-endian")
        checked[name] = array
    return checked


def _arrays(raw: dict) -> dict:
    return {
        name: np.frombuffer(data, dtype="<f4").reshape(shape)
        for name, (shape, data) in raw.items()
    }


def run(
    program_or_onnx: ProgramLike,
    inputs: Mapping[str, np.ndarray],
    backend: str = "vulkan",
    device: Optional[int] = None,
    trace: bool = True,
):
    """Runs a program (or ONNX model) as ``lockstep exec`` does.

    Returns ``(outputs, trace)``: ``outputs`` maps each declared output to
    a float32 array; ``trace`` is the trace.json document as a dict (the
    root in ``trace["root"]``), or None when ``trace=False``.
    ``backend`` is ``"vulkan"`` (``device``: an index from ``devices()``,
    default the preferred one) or ``"cpu"``, the reference.
    """
    program = _program(program_or_onnx)
    outputs, trace_json = _native.run(
        program, _inputs(inputs), backend, device=device, trace=trace
    )
    return _arrays(outputs), (json.loads(trace_json) if trace_json else None)


class Receipt:
    """A node's signed receipt: its exact JSON bytes, minisign signature
    and EIP-712 chain signature, and the fields parsed."""

    def __init__(self, json_bytes: bytes, signature: str, chain_signature: Optional[str]):
        self.json = bytes(json_bytes)
        self.signature = signature
        self.chain_signature = chain_signature
        self.fields = json.loads(self.json)

    def __getitem__(self, key):
        return self.fields[key]

    def __repr__(self):
        return (
            f"Receipt(job {self.fields.get('job_id')}, node {self.fields.get('node')}, "
            f"trace root {self.fields.get('trace_root')})"
        )

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes PATH, PATH.minisig and PATH.eip712, as ``lockstep submit``
        does, so ``lockstep verify-receipt`` and minisign read them."""
        path = Path(path)
        path.write_bytes(self.json)
        Path(f"{path}.minisig").write_text(self.signature)
        if self.chain_signature is not None:
            Path(f"{path}.eip712").write_text(self.chain_signature + "\n")

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Receipt":
        """Reads a receipt ``lockstep submit`` or :meth:`save` wrote."""
        path = Path(path)
        body = _read(path)
        signature = _read(Path(f"{path}.minisig")).decode("utf-8", "replace")
        chain = Path(f"{path}.eip712")
        chain_signature = _read(chain).decode().strip() if chain.exists() else None
        return cls(body, signature, chain_signature)


class Node:
    """A node at ``addr`` ("HOST:PORT"), pinned to ``node_key`` (its
    minisign public key, ``lockstep identity``): a node that cannot prove
    it holds that key is refused before anything is sent."""

    def __init__(self, addr: str, node_key: str):
        self.addr = addr
        self.node_key = node_key.strip()

    def __repr__(self):
        return f"Node({self.addr!r}, {self.node_key!r})"

    def submit(
        self,
        program_or_onnx: ProgramLike,
        inputs: Mapping[str, np.ndarray],
        device: Union[int, str, None] = None,
    ):
        """Runs the program on the node, as ``lockstep submit exec``.

        Returns ``(outputs, receipt)``. The receipt is already checked: it
        verifies under the pinned key and the node's chain key, and names
        the outputs' hashes. ``device`` picks one of the node's devices by
        index or UUID."""
        program = _program(program_or_onnx)
        outputs, body, signature, chain = _native.submit(
            self.addr,
            self.node_key,
            program,
            _inputs(inputs),
            device=None if device is None else str(device),
        )
        return _arrays(outputs), Receipt(body, signature, chain)


def verify_receipt(
    receipt: Union[Receipt, str, os.PathLike],
    node_key: str,
    outputs: Optional[Mapping[str, np.ndarray]] = None,
) -> dict:
    """Verifies a receipt (a :class:`Receipt` or a receipt file with its
    ``.minisig`` and ``.eip712`` beside it) under ``node_key``, as
    ``lockstep verify-receipt`` does, and that each of ``outputs`` hashes
    to the receipt's output of that name. Returns the receipt's fields;
    raises :class:`InputError` when anything does not verify."""
    if not isinstance(receipt, Receipt):
        receipt = Receipt.load(receipt)
    fields = _native.verify_receipt(
        receipt.json,
        receipt.signature,
        receipt.chain_signature,
        node_key.strip(),
        _inputs(outputs or {}, "output"),
    )
    return json.loads(fields)


def devices() -> list:
    """The Vulkan devices, as ``lockstep devices --json`` lists them."""
    return json.loads(_native.devices())
