"""A small convolutional autoencoder for one image data set, and its training loop.

Architecture (`AutoencoderSpec` fixes every choice; its `key` names the cache file):
    input (C, H, W), standardised by the training set's pixel mean and standard deviation,
    zero-padded to multiples of 4
    encoder: conv 3x3 stride 2 -> GELU -> conv 3x3 stride 2 -> GELU -> linear -> K latents
    decoder: linear -> GELU -> transposed conv 4x4 stride 2 -> GELU -> transposed conv 4x4
             stride 2 -> crop to (H, W) -> squash into the training set's range [lo, hi]:
             lo + (hi - lo) sigmoid(u), u standardised so that sigmoid(u) maps the pixel mean
The decoder's output is bounded by the data's own range (bounded data give bounded samples: a
decoded blend of digits in 0..255 stays in 0..255, where an unsquashed decoder drifted to about
-32..288 at sigma 0.8). The range is the training set's smallest and largest value, saved with
the weights; the sigmoid is smooth, so decoder Jacobians (sensitivity) exist everywhere.

Training is plain Adam on the mean squared error with a cosine learning-rate decay, seeded, on
the training set itself (the model only needs to represent these images). Batches are drawn by a
seeded permutation, so a run is deterministic for a seed on one machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cdm_core.errors import CdmInputError

log = logging.getLogger(__name__)

ARCHITECTURE = "cfdm-conv-ae-2"  # bump when the module structure below changes (2: bounded output)


@dataclass(frozen=True)
class AutoencoderSpec:
    """The built-in autoencoder's settings: architecture, and how it is trained."""

    latent_dim: int = 16  # K: latent coordinates per image
    widths: tuple = (32, 64)  # channels of the two stride-2 convolutions
    train_steps: int = 0  # Adam steps; 0 picks by data size (see `steps_for`)
    batch: int = 128  # images per Adam step
    lr: float = 2e-3  # peak learning rate, cosine-decayed to 5% of it
    seed: int = 0  # initialisation and batch order

    def __post_init__(self) -> None:
        k = self.latent_dim
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 512:
            raise CdmInputError(f"latent_dim must be an integer between 1 and 512, got {self.latent_dim!r}")
        s = self.train_steps
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= 10**6:
            raise CdmInputError(f"train_steps must be an integer between 0 and 1000000, got {self.train_steps!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"architecture": ARCHITECTURE}

    @property
    def key(self) -> str:
        """Hash of the architecture and training settings (part of the cache file's name)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def steps_for(n_images: int) -> int:
    """Default Adam steps: about 12 passes over small sets, capped at 2,500 steps (about 5 passes
    over Fashion-MNIST, under 3 minutes on 2 CPU cores) and at least 600."""
    return int(min(2500, max(600, math.ceil(12 * n_images / 128))))


def _padded(n: int) -> int:
    return -(-n // 4) * 4


class ConvAutoencoder(nn.Module):
    """Encoder and decoder for images of `image_shape` ((H, W) or (H, W, C)), flattened rows in,
    flattened rows out, both in data units."""

    def __init__(self, image_shape: tuple, spec: AutoencoderSpec):
        super().__init__()
        h, w = image_shape[:2]
        c = image_shape[2] if len(image_shape) == 3 else 1
        self.image_shape, self.spec = tuple(image_shape), spec
        self.h, self.w, self.c = h, w, c
        self.hp, self.wp = _padded(h), _padded(w)
        c1, c2 = spec.widths
        self.inner = (c2, self.hp // 4, self.wp // 4)
        flat = c2 * (self.hp // 4) * (self.wp // 4)
        self.encoder = nn.Sequential(
            nn.Conv2d(c, c1, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.GELU(),
            nn.Flatten(), nn.Linear(flat, spec.latent_dim))
        self.decoder_in = nn.Sequential(nn.Linear(spec.latent_dim, flat), nn.GELU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.GELU(),
            nn.ConvTranspose2d(c1, c, 4, stride=2, padding=1))
        # the training set's pixel mean and standard deviation (saved with the weights)
        self.register_buffer("pixel_mean", torch.zeros(()))
        self.register_buffer("pixel_std", torch.ones(()))
        # the training set's smallest and largest value: the decoder's output range
        self.register_buffer("pixel_min", torch.zeros(()))
        self.register_buffer("pixel_max", torch.ones(()))
        # RMS of the raw latent coordinates on the training set: latents are divided by it, so a
        # latent sigma means the same for every data set (coordinates of unit size)
        self.register_buffer("latent_scale", torch.ones(()))

    def _images(self, rows: torch.Tensor) -> torch.Tensor:
        x = rows.reshape(-1, self.h, self.w, self.c).permute(0, 3, 1, 2)
        x = (x - self.pixel_mean) / self.pixel_std
        return nn.functional.pad(x, (0, self.wp - self.w, 0, self.hp - self.h))

    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, D) data-unit rows -> (B, K) latents."""
        return self.encoder(self._images(rows)) / self.latent_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, K) latents -> (B, D) data-unit rows."""
        y = self.decoder(self.decoder_in(z * self.latent_scale).reshape(-1, *self.inner))[:, :, :self.h, :self.w]
        return self.squash(y).permute(0, 2, 3, 1).reshape(len(z), -1)

    def squash(self, u: torch.Tensor) -> torch.Tensor:
        """Raw decoder output -> data units inside [pixel_min, pixel_max]: u = 0 decodes to the
        pixel mean and a unit of u is about a pixel standard deviation near it."""
        span = self.pixel_max - self.pixel_min
        p = ((self.pixel_mean - self.pixel_min) / span).clamp(1e-3, 1 - 1e-3)  # the mean's place in the range
        slope = self.pixel_std / (span * p * (1 - p))  # d sigmoid / du at the mean = std / span
        return self.pixel_min + span * torch.sigmoid(u * slope + torch.log(p / (1 - p)))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(rows))


def build(image_shape: tuple, spec: AutoencoderSpec) -> ConvAutoencoder:
    """A freshly initialised model: its weights depend on the seed alone (torch's global random
    state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return ConvAutoencoder(image_shape, spec)


def train(points: np.ndarray, image_shape: tuple, spec: AutoencoderSpec, callback=None) -> ConvAutoencoder:
    """Train the built-in autoencoder on `points` (N, D) float32; `callback(step, steps, loss)`
    reports progress. Returns the model in eval mode (float32, CPU)."""
    gen = torch.Generator().manual_seed(spec.seed)
    model = build(image_shape, spec)
    x = torch.as_tensor(np.array(points, dtype=np.float32))  # a copy: the points may be a read-only memory map
    model.pixel_mean.fill_(float(x.mean()))
    model.pixel_std.fill_(max(float(x.std()), 1e-12))
    lo, hi = float(x.min()), float(x.max())
    model.pixel_min.fill_(lo)
    model.pixel_max.fill_(hi if hi > lo else lo + 1.0)
    steps = spec.train_steps or steps_for(len(x))
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * k / steps)))
    batch = min(spec.batch, len(x))
    order, pos = torch.randperm(len(x), generator=gen), 0
    model.train()
    for k in range(steps):
        if pos + batch > len(x):
            order, pos = torch.randperm(len(x), generator=gen), 0
        rows = x[order[pos:pos + batch]]
        pos += batch
        # loss in standardised units, so the learning rate means the same for every data scale
        loss = nn.functional.mse_loss(model(rows), rows) / model.pixel_std ** 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if callback is not None:
            callback(k + 1, steps, float(loss.detach()))
    model.eval()
    with torch.no_grad():
        raw = torch.cat([model.encode(x[i:i + 4096]) for i in range(0, len(x), 4096)])
        model.latent_scale.fill_(max(float(raw.pow(2).mean().sqrt()), 1e-12))
    return model
