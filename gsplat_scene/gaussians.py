"""The Gaussian map's parameters, in the 3D Gaussian Splatting parameterisation.

N Gaussians, all in the world frame (REP-103: metres, z up):
    means          (N, 3)  centres [m]
    quats          (N, 4)  rotations as quaternions (w, x, y, z); normalised when used
    log_scales     (N, 3)  log of the standard deviations along the Gaussian's axes [log m]
    opacity_logits (N,)    logit of the peak opacity
    sh0            (N, 3)  degree-0 spherical-harmonic colour: rgb = 0.5 + SH_C0 * sh0
    labels         (N,)    int64 instance id (0 background, object ids from the instance mask)

The same layout is what the standard PLY stores (x y z, f_dc_0..2, opacity, scale_0..2,
rot_0..3), so saving and loading is a plain copy.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

SH_C0 = 0.28209479177387814
PARAMETERS = ("means", "quats", "log_scales", "opacity_logits", "sh0")


@dataclass
class Gaussians:
    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh0: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        n = self.means.shape[0]
        shapes = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3),
                  "opacity_logits": (n,), "sh0": (n, 3), "labels": (n,)}
        for name, shape in shapes.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}, "
                                 f"expected {shape}")

    @classmethod
    def empty(cls, device="cpu", dtype=torch.float32) -> "Gaussians":
        z = lambda *s: torch.zeros(*s, device=device, dtype=dtype)  # noqa: E731
        return cls(z(0, 3), z(0, 4), z(0, 3), z(0), z(0, 3),
                   torch.zeros(0, dtype=torch.int64, device=device))

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def device(self) -> torch.device:
        return self.means.device

    # Activated values, as the renderer takes them.
    @property
    def scales(self) -> torch.Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def colors(self) -> torch.Tensor:
        return (0.5 + SH_C0 * self.sh0).clamp(0.0, 1.0)

    @property
    def unit_quats(self) -> torch.Tensor:
        return torch.nn.functional.normalize(self.quats, dim=-1)

    def select(self, index) -> "Gaussians":
        """The subset at a boolean mask or index tensor."""
        return Gaussians(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def cat(self, other: "Gaussians") -> "Gaussians":
        return Gaussians(**{f.name: torch.cat([getattr(self, f.name), getattr(other, f.name)])
                            for f in fields(self)})

    def to(self, device) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def detach(self) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def nbytes(self) -> int:
        return sum(getattr(self, f.name).element_size() * getattr(self, f.name).numel()
                   for f in fields(self))


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of (..., 4) wxyz quaternions."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def quat_from_matrix(R: torch.Tensor) -> torch.Tensor:
    """(w, x, y, z) of a rotation matrix (3, 3)."""
    m = R
    t = m.trace()
    if t > 0:
        s = torch.sqrt(t + 1.0) * 2
        q = torch.stack([0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s,
                         (m[1, 0] - m[0, 1]) / s])
    else:
        i = int(torch.argmax(torch.diagonal(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = torch.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k]) * 2
        q = torch.empty(4, dtype=m.dtype, device=m.device)
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    return q / q.norm()
