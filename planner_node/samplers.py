"""Sampling-based trajectory optimisers: CEM, MPPI and iCEM, one loop, three update rules.

Each optimises a Gaussian over action sequences (H, D) against a batched cost function
`cost(actions (N, H, D)) -> (N,)`, lower is better. They share `optimize()`:
sample around the mean, score, update the mean and std, keep the best sequence seen.

- CEM: white Gaussian noise; mean and std refitted to the elites (with momentum).
- MPPI: white Gaussian noise; mean and std are the exp(-cost / temperature)-weighted
  statistics of all samples.
- iCEM (Pinneri et al. 2020): coloured noise (power spectrum ~ 1 / f^beta along time, so
  samples are smooth), a share of the previous iteration's elites kept, the mean itself
  among the samples, CEM update.

A warm start (`shift`) moves the last plan forward by the steps executed since.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch


def coloured_noise(n: int, horizon: int, dims: int, beta: float,
                   generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """(n, horizon, dims) unit-variance Gaussian noise with power ~ 1 / f^beta along the
    horizon (beta 0: white; 2: Brownian-like)."""
    if beta == 0:
        return torch.randn(n, horizon, dims, generator=generator, device=device)
    freqs = torch.fft.rfftfreq(horizon, device=device)
    freqs[0] = freqs[1] if horizon > 1 else 1.0
    scale = freqs ** (-beta / 2)
    spectrum = torch.complex(torch.randn(n, dims, freqs.numel(), generator=generator,
                                         device=device),
                             torch.randn(n, dims, freqs.numel(), generator=generator,
                                         device=device)) * scale
    noise = torch.fft.irfft(spectrum, n=horizon)
    noise = noise / noise.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-8)
    return noise.transpose(1, 2).contiguous()


@dataclass
class SamplerConfig:
    samples: int = 256
    iterations: int = 3
    elites: int = 32               # CEM / iCEM
    momentum: float = 0.1          # share of the old mean / std kept (CEM / iCEM)
    temperature: float = 0.1       # MPPI, in units of the samples' cost spread
    noise_beta: float = 2.0        # iCEM colour exponent
    keep_elites: float = 0.3       # iCEM: share of elites carried to the next iteration
    min_std: float = 0.05          # of the initial std


@dataclass
class Result:
    """Best sequence found and what the last iteration sampled."""
    best: torch.Tensor               # (H, D)
    best_cost: float
    samples: torch.Tensor            # (N, H, D) of the last iteration
    costs: torch.Tensor              # (N,)
    iterations: int
    mean: torch.Tensor               # (H, D), the distribution after the last update
    std: torch.Tensor
    cost_history: list = field(default_factory=list)   # best cost after each iteration


class Sampler:
    """Shared loop; subclasses define `noise` and `update`."""

    name = "sampler"

    def __init__(self, config: SamplerConfig):
        self.config = config

    def noise(self, n, horizon, dims, generator, device) -> torch.Tensor:
        return torch.randn(n, horizon, dims, generator=generator, device=device)

    def update(self, samples, costs, mean, std) -> tuple:
        raise NotImplementedError

    def extra_samples(self, mean, previous_elites) -> list:
        return []

    def optimize(self, cost_fn, mean: torch.Tensor, std: torch.Tensor,
                 lower: torch.Tensor | None = None, upper: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, budget_s: float | None = None,
                 candidates: torch.Tensor | None = None) -> Result:
        """Minimise cost_fn from N(mean, std^2) (both (H, D)); samples are clipped to
        [lower, upper] (broadcastable to (H, D)) when given; `candidates` (C, H, D) are
        scored in every iteration besides the samples (e.g. "stop here"). Stops after the
        configured iterations, or earlier when the next one would exceed budget_s seconds.
        The distribution's final mean is scored too and wins if it is best."""
        c = self.config
        start = time.perf_counter()
        min_std = std * c.min_std
        best, best_cost, elites, history = mean.clone(), float("inf"), None, []
        fixed = [] if candidates is None else [candidates]
        for it in range(c.iterations):
            extra = self.extra_samples(mean, elites) + fixed
            n = c.samples - sum(x.shape[0] for x in extra)
            samples = mean + std * self.noise(n, *mean.shape, generator, mean.device)
            samples = torch.cat([samples, *extra], 0)
            if lower is not None:
                samples = torch.maximum(torch.minimum(samples, upper), lower)
            costs = cost_fn(samples)
            costs = torch.where(torch.isfinite(costs), costs, torch.full_like(costs, 1e9))
            i = int(torch.argmin(costs))
            if float(costs[i]) < best_cost:
                best, best_cost = samples[i].clone(), float(costs[i])
            history.append(best_cost)
            elites = samples[torch.topk(costs, min(c.elites, len(costs)), largest=False).indices]
            mean, std = self.update(samples, costs, mean, std)
            std = torch.maximum(std, min_std)
            elapsed = time.perf_counter() - start
            if budget_s is not None and elapsed * (it + 2) / (it + 1) > budget_s:
                break
        final = mean if lower is None else torch.maximum(torch.minimum(mean, upper), lower)
        final_cost = float(cost_fn(final[None])[0])
        if final_cost < best_cost:
            best, best_cost = final.clone(), final_cost
            history.append(best_cost)
        return Result(best, best_cost, samples, costs, it + 1, mean, std, history)


class CEM(Sampler):
    name = "cem"

    def update(self, samples, costs, mean, std):
        c = self.config
        elite = samples[torch.topk(costs, min(c.elites, len(costs)), largest=False).indices]
        return (c.momentum * mean + (1 - c.momentum) * elite.mean(0),
                c.momentum * std + (1 - c.momentum) * elite.std(0, unbiased=False))


class MPPI(Sampler):
    name = "mppi"

    def update(self, samples, costs, mean, std):
        spread = (costs.max() - costs.min()).clamp(min=1e-9)
        w = torch.softmax(-(costs - costs.min()) / (self.config.temperature * spread), 0)
        new_mean = (w[:, None, None] * samples).sum(0)
        var = (w[:, None, None] * (samples - new_mean) ** 2).sum(0)
        return new_mean, var.sqrt()


class ICEM(CEM):
    name = "icem"

    def noise(self, n, horizon, dims, generator, device):
        return coloured_noise(n, horizon, dims, self.config.noise_beta, generator, device)

    def extra_samples(self, mean, previous_elites):
        extra = [mean[None]]
        if previous_elites is not None:
            keep = int(round(self.config.keep_elites * previous_elites.shape[0]))
            extra.append(previous_elites[:keep])
        return extra


SAMPLERS = {"cem": CEM, "mppi": MPPI, "icem": ICEM}


def make_sampler(name: str, config: SamplerConfig) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{name}': expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](config)


def shift(sequence: torch.Tensor, steps: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Warm start: sequence (H, D) moved `steps` forward, the end padded with `fill` (D,)
    (default: the last step repeated)."""
    steps = min(steps, sequence.shape[0])
    if steps == 0:
        return sequence.clone()
    pad = (sequence[-1] if fill is None else fill).expand(steps, -1)
    return torch.cat([sequence[steps:], pad], 0)
