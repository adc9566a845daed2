"""Gaussian maps as standard 3D Gaussian Splatting PLY files.

The layout is the one the reference implementation writes and splat viewers open: one
`vertex` element, binary little-endian, float32 properties

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

(normals unused and written as 0; opacity as a logit, scales as logs, rot as w x y z), followed
by our own `int label` (instance id). Values are the stored parameters themselves, so a
save/load round trip is bit-exact.

Loading accepts what other tools write: no `label` (labels become 0), higher-order `f_rest_*`
and other extra properties (ignored), any property order, either binary byte order, double
precision. Anything else (ascii, list properties, other elements, missing properties,
non-finite values, truncated or trailing data) is rejected with a ValueError naming the file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from gsplat_scene.gaussians import PARAMETERS, Gaussians

# (PLY property name, Gaussians field, column within the field)
_FLOAT_PROPERTIES = (
    [(axis, "means", i) for i, axis in enumerate("xyz")]
    + [(f"f_dc_{i}", "sh0", i) for i in range(3)]
    + [("opacity", "opacity_logits", None)]
    + [(f"scale_{i}", "log_scales", i) for i in range(3)]
    + [(f"rot_{i}", "quats", i) for i in range(4)]
)
_NORMALS = ("nx", "ny", "nz")
# The header order the standard layout uses, normals after the position.
STANDARD_PROPERTIES = ("x", "y", "z", *_NORMALS,
                       *(name for name, _, _ in _FLOAT_PROPERTIES[3:]))
LABEL = "label"

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_BYTE_ORDERS = {"binary_little_endian": "<", "binary_big_endian": ">"}
_MAX_HEADER_BYTES = 1 << 16


def save_ply(path, gaussians: Gaussians) -> None:
    """Write `gaussians` to `path` atomically (a temporary file in the same directory, then a
    rename), so readers and crashes only ever see the old map or the complete new one.

    Raises ValueError for non-finite parameters or labels outside int32.
    """
    path = Path(path)
    g = gaussians.detach().to("cpu")
    n = len(g)
    for field in PARAMETERS:
        if not torch.isfinite(getattr(g, field)).all():
            raise ValueError(f"{path}: refusing to save non-finite {field}")
    labels = g.labels.numpy()
    info = np.iinfo(np.int32)
    if n and (labels.min() < info.min or labels.max() > info.max):
        raise ValueError(f"{path}: labels outside the int32 range of the PLY 'label' property")

    columns = {name: _column(g, field, col) for name, field, col in _FLOAT_PROPERTIES}
    columns.update({normal: np.zeros(n, np.float32) for normal in _NORMALS})
    dtype = np.dtype([(name, "<f4") for name in STANDARD_PROPERTIES] + [(LABEL, "<i4")])
    vertices = np.empty(n, dtype)
    for name in STANDARD_PROPERTIES:
        vertices[name] = columns[name]
    vertices[LABEL] = labels
    header = "".join(["ply\n", "format binary_little_endian 1.0\n", f"element vertex {n}\n"]
                     + [f"property float {name}\n" for name in STANDARD_PROPERTIES]
                     + [f"property int {LABEL}\n", "end_header\n"])

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(vertices.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_ply(path, device="cpu") -> Gaussians:
    """Read a 3DGS PLY file (see the module docstring for what is accepted).

    Returns float32 parameters and int64 labels on `device`.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e}") from e
    byte_order, n, properties, body_start = _parse_header(path, data)

    names = [name for name, _ in properties]
    required = [name for name, _, _ in _FLOAT_PROPERTIES]
    missing = [name for name in required if name not in names]
    if missing:
        raise ValueError(f"{path}: missing required vertex properties {missing}")
    dtype = np.dtype([(name, byte_order + code) for name, code in properties])
    expected = n * dtype.itemsize
    got = len(data) - body_start
    if got < expected:
        raise ValueError(f"{path}: truncated: {n} vertices need {expected} bytes of data, "
                         f"file has {got}")
    if got > expected:
        raise ValueError(f"{path}: {got - expected} unexpected bytes after the {n} vertices")
    vertices = np.frombuffer(data, dtype, count=n, offset=body_start)

    for name in required:
        if dtype[name].kind != "f":
            raise ValueError(f"{path}: property '{name}' must be float or double")
        if not np.isfinite(vertices[name]).all():
            raise ValueError(f"{path}: property '{name}' has non-finite (NaN or inf) values")
    fields = {}
    for field in ("means", "sh0", "log_scales", "quats"):
        cols = [name for name, f, _ in _FLOAT_PROPERTIES if f == field]
        fields[field] = np.stack([vertices[name].astype(np.float32) for name in cols], axis=1)
    fields["opacity_logits"] = vertices["opacity"].astype(np.float32)
    if LABEL in names:
        if dtype[LABEL].kind not in "iu":
            raise ValueError(f"{path}: property '{LABEL}' must be an integer type")
        fields["labels"] = vertices[LABEL].astype(np.int64)
    else:
        fields["labels"] = np.zeros(n, np.int64)
    return Gaussians(**{k: torch.from_numpy(np.ascontiguousarray(v)).to(device)
                        for k, v in fields.items()})


def _column(g: Gaussians, field: str, col) -> np.ndarray:
    values = getattr(g, field)
    return (values if col is None else values[:, col]).numpy().astype(np.float32, copy=False)


def _parse_header(path: Path, data: bytes):
    """(numpy byte order, vertex count, [(name, numpy type code)], offset of the body)."""
    end = data.find(b"\nend_header", 0, _MAX_HEADER_BYTES)
    if not (data.startswith(b"ply\n") or data.startswith(b"ply\r\n")) or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic line or no 'end_header' in "
                         f"the first {_MAX_HEADER_BYTES} bytes)")
    newline = data.find(b"\n", end + 1)
    if newline < 0 or data[end + 11:newline].strip():
        raise ValueError(f"{path}: malformed or truncated 'end_header' line")
    try:
        lines = data[:end].decode("ascii").splitlines()[1:]
    except UnicodeDecodeError:
        raise ValueError(f"{path}: header is not ASCII text") from None

    byte_order, n, properties, element = None, None, [], None
    for number, line in enumerate(lines, start=2):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        bad = ValueError(f"{path}: header line {number} is malformed: {line!r}")
        if words[0] == "format":
            if len(words) != 3:
                raise bad
            if words[1] not in _BYTE_ORDERS:
                raise ValueError(f"{path}: PLY format '{words[1]}' is not supported "
                                 f"(expected binary_little_endian or binary_big_endian)")
            byte_order = _BYTE_ORDERS[words[1]]
        elif words[0] == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise bad
            if element is not None or words[1] != "vertex":
                raise ValueError(f"{path}: only a single 'vertex' element is supported, "
                                 f"found element '{words[1]}'")
            element, n = words[1], int(words[2])
        elif words[0] == "property":
            if element is None:
                raise ValueError(f"{path}: property before any element on line {number}")
            if len(words) >= 2 and words[1] == "list":
                raise ValueError(f"{path}: list property '{words[-1]}' is not supported")
            if len(words) != 3 or words[1] not in _PLY_TYPES:
                raise bad
            if any(words[2] == name for name, _ in properties):
                raise ValueError(f"{path}: duplicate property '{words[2]}'")
            properties.append((words[2], _PLY_TYPES[words[1]]))
        else:
            raise bad
    if byte_order is None:
        raise ValueError(f"{path}: header has no 'format' line")
    if element is None:
        raise ValueError(f"{path}: header has no 'vertex' element")
    return byte_order, n, properties, newline + 1
