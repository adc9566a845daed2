"""Gaussian maps as standard 3DGS PLY files: layout, round trip, what is accepted and rejected."""
import numpy as np
import pytest
import torch

from gsplat_scene.gaussians import Gaussians
from gsplat_scene.ply import STANDARD_PROPERTIES, load_ply, save_ply

REFERENCE_ORDER = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                   "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def random_gaussians(n=257, seed=0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return Gaussians(means=r(n, 3), quats=r(n, 4), log_scales=r(n, 3) - 4.0,
                     opacity_logits=r(n), sh0=r(n, 3),
                     labels=torch.randint(-5, 2**31 - 1, (n,), generator=g))


def header_lines(path) -> list[str]:
    data = path.read_bytes()
    return data[:data.index(b"end_header\n")].decode("ascii").splitlines()


def write_ply(path, columns: dict, types: dict | None = None, fmt="binary_little_endian",
              n=None, extra=b""):
    """A PLY file with the given columns, in the given order (float32 unless typed)."""
    types = types or {}
    n = len(next(iter(columns.values()))) if n is None else n
    dtype = np.dtype([(k, types.get(k, "<f4")) for k in columns])
    rows = np.empty(len(next(iter(columns.values()))), dtype)
    for k, v in columns.items():
        rows[k] = v
    ply_type = {"f4": "float", "f8": "double", "i4": "int", "u1": "uchar"}
    props = "".join(f"property {ply_type[dtype[k].str[1:]]} {k}\n" for k in columns)
    header = f"ply\nformat {fmt} 1.0\nelement vertex {n}\n{props}end_header\n"
    path.write_bytes(header.encode() + rows.tobytes() + extra)
    return path


def standard_columns(g: Gaussians) -> dict:
    return {"x": g.means[:, 0], "y": g.means[:, 1], "z": g.means[:, 2],
            **{f"f_dc_{i}": g.sh0[:, i] for i in range(3)}, "opacity": g.opacity_logits,
            **{f"scale_{i}": g.log_scales[:, i] for i in range(3)},
            **{f"rot_{i}": g.quats[:, i] for i in range(4)}}


def test_round_trip_is_bit_exact(tmp_path):
    g = random_gaussians()
    save_ply(tmp_path / "map.ply", g)
    back = load_ply(tmp_path / "map.ply")
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh0", "labels"):
        a, b = getattr(g, name), getattr(back, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        # Bit patterns, not values: -0.0 and NaN payloads would slip through ==.
        if a.is_floating_point():
            a, b = a.view(torch.int32), b.view(torch.int32)
        assert torch.equal(a, b), name


def test_round_trip_of_an_empty_map(tmp_path):
    save_ply(tmp_path / "empty.ply", Gaussians.empty())
    assert len(load_ply(tmp_path / "empty.ply")) == 0


def test_header_is_the_standard_layout(tmp_path):
    save_ply(tmp_path / "map.ply", random_gaussians(10))
    lines = header_lines(tmp_path / "map.ply")
    assert lines[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 10"]
    props = [line.split() for line in lines[3:]]
    assert [p[2] for p in props] == REFERENCE_ORDER + ["label"]
    assert [p[1] for p in props] == ["float"] * 17 + ["int"]
    assert list(STANDARD_PROPERTIES) == REFERENCE_ORDER
    # 17 float32 + 1 int32 per vertex, nothing else after the header.
    size = (tmp_path / "map.ply").stat().st_size
    assert size == len("\n".join(lines)) + len("\nend_header\n") + 10 * 18 * 4


def test_normals_are_written_as_zero(tmp_path):
    save_ply(tmp_path / "map.ply", random_gaussians(20))
    data = (tmp_path / "map.ply").read_bytes()
    body = np.frombuffer(data[data.index(b"end_header\n") + 11:], "<f4").reshape(20, 18)
    assert (body[:, 3:6] == 0).all()


def test_loads_files_from_other_tools(tmp_path):
    """No label, 45 f_rest_* coefficients, shuffled property order, double precision."""
    g = random_gaussians(33, seed=1)
    cols = standard_columns(g)
    cols.update({f"f_rest_{i}": torch.full((33,), float(i)) for i in range(45)})
    cols.update({"nx": torch.zeros(33), "ny": torch.zeros(33), "nz": torch.zeros(33)})
    names = list(cols)
    order = np.random.default_rng(0).permutation(len(names))
    shuffled = {names[i]: cols[names[i]].numpy() for i in order}
    path = write_ply(tmp_path / "other.ply", shuffled, types={"opacity": "<f8"})
    back = load_ply(path)
    assert torch.equal(back.labels, torch.zeros(33, dtype=torch.int64))
    assert torch.equal(back.means, g.means) and torch.equal(back.quats, g.quats)
    assert torch.equal(back.sh0, g.sh0) and torch.equal(back.log_scales, g.log_scales)
    assert torch.equal(back.opacity_logits, g.opacity_logits)  # float32 -> double -> float32


def test_loads_big_endian(tmp_path):
    g = random_gaussians(5, seed=2)
    cols = {k: v.numpy() for k, v in standard_columns(g).items()}
    types = {k: ">f4" for k in cols}
    path = write_ply(tmp_path / "be.ply", cols, types=types, fmt="binary_big_endian")
    assert torch.equal(load_ply(path).means, g.means)


def test_loads_onto_a_device(tmp_path):
    save_ply(tmp_path / "map.ply", random_gaussians(4))
    assert load_ply(tmp_path / "map.ply", device="meta").device.type == "meta"


@pytest.fixture
def good_file(tmp_path):
    save_ply(tmp_path / "map.ply", random_gaussians(50))
    return tmp_path / "map.ply"


def expect_error(path, *words):
    with pytest.raises(ValueError) as info:
        load_ply(path)
    message = str(info.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, message


def test_rejects_truncated_file(good_file):
    data = good_file.read_bytes()
    good_file.write_bytes(data[:-7])
    expect_error(good_file, "truncated")
    good_file.write_bytes(data[:data.index(b"end_header") + 4])
    expect_error(good_file, "end_header")


def test_rejects_trailing_bytes(good_file):
    good_file.write_bytes(good_file.read_bytes() + b"\0" * 4)
    expect_error(good_file, "unexpected bytes")


def test_rejects_garbage(tmp_path):
    path = tmp_path / "garbage.ply"
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    expect_error(path, "not a PLY file")
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\n"
                     b"property float\nend_header\n" + b"\0" * 4)
    expect_error(path, "line 4", "malformed")
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex x\nend_header\n")
    expect_error(path, "line 3")
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\n"
                     b"property float x\nproperty float x\nend_header\n" + b"\0" * 8)
    expect_error(path, "duplicate property 'x'")
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\n"
                     b"property list uchar int vertex_indices\nend_header\n")
    expect_error(path, "list property")
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement face 1\nend_header\n")
    expect_error(path, "element 'face'")
    path.write_bytes(b"ply\nelement vertex 0\nend_header\n")
    expect_error(path, "no 'format'")
    expect_error(tmp_path / "does_not_exist.ply", "cannot read")


def test_rejects_ascii(tmp_path):
    path = tmp_path / "ascii.ply"
    path.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n"
                     b"end_header\n0.5\n")
    expect_error(path, "'ascii' is not supported")


def test_rejects_missing_property(tmp_path):
    cols = {k: v.numpy() for k, v in standard_columns(random_gaussians(8)).items()}
    del cols["scale_1"], cols["rot_3"]
    expect_error(write_ply(tmp_path / "missing.ply", cols), "missing", "scale_1", "rot_3")


def test_rejects_wrongly_typed_properties(tmp_path):
    cols = {k: v.numpy() for k, v in standard_columns(random_gaussians(8)).items()}
    expect_error(write_ply(tmp_path / "t.ply", cols, types={"x": "<i4"}), "'x'", "float")
    cols["label"] = np.ones(8, np.float32)
    expect_error(write_ply(tmp_path / "t.ply", cols), "'label'", "integer")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_rejects_non_finite_values(tmp_path, bad):
    cols = {k: v.numpy().copy() for k, v in standard_columns(random_gaussians(8)).items()}
    cols["rot_2"][5] = bad
    expect_error(write_ply(tmp_path / "nan.ply", cols), "'rot_2'", "non-finite")


def test_save_rejects_what_load_would_reject(tmp_path):
    g = random_gaussians(8)
    g.log_scales[3, 1] = float("nan")
    with pytest.raises(ValueError, match="log_scales"):
        save_ply(tmp_path / "map.ply", g)
    g = random_gaussians(8)
    g.labels[0] = 2**31
    with pytest.raises(ValueError, match="int32"):
        save_ply(tmp_path / "map.ply", g)
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "maps" / "map.ply"
    save_ply(path, random_gaussians(30))
    before = path.read_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["map.ply"]

    # A crash while writing the new file leaves the old one intact and no temporary file.
    def crash(*_):
        raise OSError("disk full")
    monkeypatch.setattr("os.fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        save_ply(path, random_gaussians(40, seed=3))
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["map.ply"]

    monkeypatch.undo()
    save_ply(path, random_gaussians(40, seed=3))
    assert len(load_ply(path)) == 40
    assert [p.name for p in path.parent.iterdir()] == ["map.ply"]
