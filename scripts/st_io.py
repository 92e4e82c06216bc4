"""Minimal safetensors reader and writer (json + numpy only).

Debian's python3-torch 1.13 ships without the `safetensors` package, so the
nnopt helper scripts use this instead. File layout (https://github.com/huggingface/safetensors):

    u64 little-endian  N            length of the JSON header in bytes
    N bytes            JSON header  {"name": {"dtype": "F32", "shape": [...],
                                              "data_offsets": [begin, end]}, ...,
                                     "__metadata__": {"key": "value", ...}}
    rest               data         tensor bytes, little-endian, row-major;
                                    offsets are relative to the start of the data

nnopt writes F32, and I64 for batch norm's num_batches_tracked (as PyTorch
keeps it). The reader takes F32, F16, F64, I32, I64 (numpy arrays of that
dtype) and BF16 (returned as float32, exactly); the writer writes integer
arrays as I64 and everything else as F32. The reader checks the header
length, dtypes, shapes against byte ranges, and that ranges stay inside the
file and do not overlap.
"""

import json
import os
import struct
import tempfile

from pydeps import require  # says how to install a missing module

require("numpy")
import numpy as np  # noqa: E402

_F32 = np.dtype("<f4")
_I64 = np.dtype("<i8")
# dtype name -> numpy dtype of its little-endian bytes
_DTYPES = {"F32": _F32, "F16": np.dtype("<f2"), "F64": np.dtype("<f8"),
           "I32": np.dtype("<i4"), "I64": _I64, "BF16": np.dtype("<u2")}


def write_safetensors(path, tensors, metadata=None):
    """Write {name: array-like} as F32 tensors (integer arrays as I64), plus
    optional {str: str} metadata.

    Tensors are written in sorted name order, as the reference implementation
    does. The file is written to a temporary file beside path and renamed, so a
    crash never leaves a half-written file under the final name.
    """
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        # (np.ascontiguousarray would turn a 0-d scalar into shape (1,).)
        arr = np.asarray(tensors[name])
        dtype, kind = (_I64, "I64") if arr.dtype.kind in "iu" else (_F32, "F32")
        arr = np.array(arr, dtype=dtype, order="C", copy=True)
        raw = arr.tobytes()
        header[name] = {"dtype": kind, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad the header with spaces to a multiple of 8 so the data is aligned.
    hjson += b" " * (-len(hjson) % 8)

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".st-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(hjson)))
            f.write(hjson)
            for raw in blobs:
                f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_safetensors(path):
    """Read a safetensors file; returns (tensors {name: numpy array}, metadata dict).

    Raises ValueError naming the file and the field at fault if it is malformed.
    """
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: file too short for the 8-byte header length")
    (hlen,) = struct.unpack("<Q", blob[:8])
    if hlen > len(blob) - 8:
        raise ValueError(f"{path}: header length {hlen} exceeds file size {len(blob)}")
    try:
        header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    data = memoryview(blob)[8 + hlen:]

    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    ranges = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise ValueError(f"{path}: tensor {name!r}: entry is not an object")
        kind = info.get("dtype")
        if kind not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r}: dtype {kind!r}, expected one of "
                             f"{', '.join(_DTYPES)}")
        dtype = _DTYPES[kind]
        shape = info.get("shape")
        offs = info.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ValueError(f"{path}: tensor {name!r}: bad shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) for o in offs)):
            raise ValueError(f"{path}: tensor {name!r}: bad data_offsets {offs!r}")
        begin, end = offs
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not 0 <= begin <= end <= len(data):
            raise ValueError(f"{path}: tensor {name!r}: data_offsets {offs} outside the "
                             f"{len(data)}-byte data section")
        if end - begin != dtype.itemsize * numel:
            raise ValueError(f"{path}: tensor {name!r}: {end - begin} bytes for shape {shape} "
                             f"of {kind}, expected {dtype.itemsize * numel}")
        ranges.append((begin, end, name))
        arr = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape).copy()
        if kind == "BF16":  # the upper half of a float32
            arr = (arr.astype(np.uint32) << np.uint32(16)).view(np.float32)
        tensors[name] = arr
    ranges.sort()
    for (b0, e0, n0), (b1, _e1, n1) in zip(ranges, ranges[1:]):
        if b1 < e0:
            raise ValueError(f"{path}: tensors {n0!r} and {n1!r} overlap")
    return tensors, metadata


# Tensors of a resume checkpoint that are not the model's: the optimizer's state,
# early stopping's copy of the best epoch's weights and weight averaging's
# average (--ema).
NOT_MODEL_PREFIXES = ("optimizer.", "__best__.", "__ema__.")


def model_state(tensors):
    """Only the model's parameters and buffers: drops the "optimizer.*",
    "__best__.*" and "__ema__.*" tensors a resume checkpoint holds."""
    return {k: v for k, v in tensors.items() if not k.startswith(NOT_MODEL_PREFIXES)}
