"""The local models of Kamb & Ganguli (arXiv 2412.20292, ICML 2025): LS and ELS, with per-pixel sources.

Images are H x W x C, channels last; channels share a pixel's weights. With y = t x + (1 - t) z
and s = 1 / (2 (1 - t)^2), for a window size k (odd, half-width r = k // 2):

- **LS, local score**: pixel p weighs training image i by its clipped k x k window W_k(p) only,
      logit_i(p) = log pi_i - s sum_{q in W_k(p)} |y_q - t x_{i,q}|^2,   D(y)_p = sum_i w_i(p) x_{i,p}.
  Clipping at the border is the same as zero-padding both images. Window sums are products
  with band matrices along each axis, and the squared distance is expanded (the |y|^2 term,
  the same for every item, cancels), with each item's window norms computed once per size.
- **ELS, equivariant local score**: pixel p compares its clipped window with the windows of every
  training image i at every position u clipped the same way (an interior pixel: every interior
  position), and takes the weighted mean of those windows' centre pixels,
      logit_{i,u}(p) = log pi_i - s sum_delta |y_{p+delta} - t x_{i,u+delta}|^2,
      D(y)_p = sum_{i,u} w_{i,u}(p) x_{i,u}.
  (The prior pi_i / |U(p)| of a pair is a constant per pixel and cancels in the softmax.)

With k >= 2 max(H, W) - 1 every window covers the image and both equal the exact empirical model.
The last Euler step lands on D, so every pixel of a sample is a convex combination of training
pixels: its *per-pixel sources* (item, pixel inside that item, weight), the largest `keep` per
pixel, with the weight left out and the entropy of the full weights recorded per pixel.

Coordinates: ELS compares positions, so it is equivariant only to shifts that are the same at
every pixel. Both models therefore work on the data minus the per-channel mean (a constant per
channel), not on the per-feature centring of the training set, and convert back at the end.
Softmaxes stream over chunks of items in float64 (running maximum, sum, weighted sum and
entropy), so memory stays bounded at any N.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from cdm_core import patches
from cdm_core.config import SamplerConfig
from cdm_core.engine.blend import F64, FLUSH, Sources, StepResult, flush_tiny_
from cdm_core.engine.refine import REFINE_NATS, expanded_error
from cdm_core.errors import CdmInputError

CHUNK_ENTRIES = 1 << 18  # logits held at once per chunk (float64): small enough to stay in cache (measured
#                          1.3 s against 2.1 s at 1 << 22 for digits, 64 samples, k = 3)
SOURCES_CHUNK = 8  # the step that keeps per-pixel sources takes chunks this many times larger: fewer top-k calls
MERGE_EVERY = 16  # chunk tops kept before they are merged into the running top k
CACHE_BYTES = 256 << 20  # ELS keeps a size's training windows when they fit in this much memory
# ATen splits a reduction with a single output over at least this many inputs across threads
# (at::internal::GRAIN_SIZE; its two-pass reduction), which adds in another order than the same sum
# beside other outputs: a one-pixel clip class keeps its chunks below it (els_evaluate)
ONE_OUTPUT_SUM_LIMIT = 32768
ELS_GROUP = 16  # ELS samples evaluated together, chunks sized for a full group (els_evaluate); digits, 20
#                 steps, 64 samples: 10.3 s at 2, 7.7 s at 4, 6.1 s at 8, 5.6 s at 16, 5.7 s at 32, 6.7 s at 64


@dataclass
class PixelSources:
    """Per-pixel sources of a batch: pixel p of sample b is sum_k weights x_{ids, pixels} (in data
    units) up to `omitted` times the largest value."""

    ids: torch.Tensor  # (B, P, K) int64 training item, -1 padded
    pixels: torch.Tensor  # (B, P, K) int64 flat pixel index inside that item (row-major), -1 padded
    weights: torch.Tensor  # (B, P, K) float64, 0 padded, largest first
    omitted: torch.Tensor  # (B, P) float64: weight left out of the K kept (plus flushed weights)
    entropy: torch.Tensor  # (B, P) float64: entropy of the pixel's full weights, nats


_SOURCE_FIELDS = tuple(f.name for f in fields(PixelSources))  # ids, pixels, weights, omitted, entropy


class _StreamingSoftmax:
    """Softmax over entries arriving in chunks, per (sample, pixel): logits (b, E, P), entries
    along dim 1. Keeps the running maximum m, sum s = sum e^(L - m), weighted values and
    t1 = sum e^(L - m) L (the entropy is m + log s - t1 / s), and the `keep` largest logits."""

    def __init__(self, b: int, p: int, c: int, keep: int, device):
        self.m = torch.full((b, p), -torch.inf, dtype=F64, device=device)
        self.s = torch.zeros(b, p, dtype=F64, device=device)
        self.t1 = torch.zeros(b, p, dtype=F64, device=device)
        self.a = torch.zeros(b, p, c, dtype=F64, device=device)
        self.keep, self.entries = keep, 0
        self.top = None  # (logits, ids, pixels), each (b, K, P), of the chunks merged so far
        self.pending = []  # chunk tops not merged yet: merged MERGE_EVERY at a time (one top-k, not one per chunk)

    def add(self, logits: torch.Tensor, weigh, ids: torch.Tensor, pixels: torch.Tensor) -> None:
        """logits (b, E, P), consumed (overwritten); weigh(e) -> (b, P, C) the e-weighted values;
        ids, pixels broadcastable to (b, E, P): the item and item pixel of each entry."""
        if self.keep:  # the largest logits first: `logits` is overwritten below
            k = min(self.keep, logits.shape[1])
            tl, ti = logits.topk(k, dim=1)
            shape = logits.shape
            self.pending.append((tl, torch.gather(ids.expand(shape), 1, ti), torch.gather(pixels.expand(shape), 1, ti)))
            if len(self.pending) >= MERGE_EVERY:
                self._merge()
        new = torch.maximum(self.m, logits.amax(1))
        scale = torch.exp(self.m - new)
        d = logits.sub_(new[:, None, :])  # L - m <= 0
        e = torch.exp(d)
        torch.threshold_(e, FLUSH, 0.0)  # weights up to 1e-30 of the max: 0 (no denormal products); one pass
        total = e.sum(1)
        if self.keep:  # sum e^(L - m) L = sum e^d d + m sum e^d, for the entropy
            self.t1 = self.t1 * scale + (e * d).sum(1) + new * total
        self.s = self.s * scale + total
        self.a = self.a * scale[..., None] + weigh(e)
        self.m = new
        self.entries += logits.shape[1]

    def _merge(self) -> None:
        """The top `keep` of the merged tops and the pending chunk tops (the top k of a union is the
        top k of its parts' top k)."""
        parts = ([self.top] if self.top is not None else []) + self.pending
        self.pending = []
        if len(parts) == 1:
            self.top = parts[0]
            return
        cat = [torch.cat(col, 1) for col in zip(*parts)]
        tl, ti = cat[0].topk(min(self.keep, cat[0].shape[1]), dim=1)
        self.top = (tl, torch.gather(cat[1], 1, ti), torch.gather(cat[2], 1, ti))

    def denoised(self) -> torch.Tensor:
        return self.a / self.s[..., None]  # (b, P, C)

    def sources(self) -> PixelSources:
        self._merge()
        tl, ti, tp = self.top
        w = flush_tiny_(torch.exp(tl - self.m[:, None, :]) / self.s[:, None, :])
        omitted = (1.0 - w.sum(1)).clamp_min(0.0) + self.entries * FLUSH
        entropy = (self.m + torch.log(self.s) - self.t1 / self.s).clamp_min(0.0)
        ok = w > 0
        return PixelSources(torch.where(ok, ti, -1).transpose(1, 2), torch.where(ok, tp, -1).transpose(1, 2),
                            w.transpose(1, 2), omitted, entropy)


def band(n: int, r: int, device=None) -> torch.Tensor:
    """(n, n) float64 0/1 matrix with ones where |i - j| <= r: multiplying by it sums a window of
    half-width r along one axis, clipped at the border."""
    pos = torch.arange(n, device=device)
    return ((pos[:, None] - pos[None, :]).abs() <= r).to(F64)


@dataclass
class LsTables:
    """What LS reads at every step: the training images row-major (N, H W, C) and row by row
    (H, N, W C) (`image_rows`), each item's squared window norms for the current size (H, N, W)
    (`window_norms`), log pi (N,), and the two magnitudes of the rounding guard."""

    images: torch.Tensor
    rows: torch.Tensor
    window_norms: torch.Tensor
    log_pi: torch.Tensor
    shape: tuple  # (H, W)
    r_max: float  # largest item norm: bounds every window's |x_i|
    log_pi_abs: float  # largest |log pi_i|


def ls_evaluate(y: torch.Tensor, t: float, size: int, tab: LsTables, keep: int
                ) -> tuple[torch.Tensor, PixelSources | None]:
    """LS for states y (B, P, C) over the training images, one sample at a time in chunks of items
    (the same products and chunks at any batch size: a sample does not depend on its batch)."""
    b, p, c = y.shape
    h, w = tab.shape
    n = tab.rows.shape[1]
    s = 1.0 / (2 * (1 - t) ** 2)
    r = size // 2
    bh, bw = band(h, r, y.device), band(w, r, y.device)
    items = max(1, min(n, CHUNK_ENTRIES * (SOURCES_CHUNK if keep else 1) // p))
    pix = (torch.arange(h, device=y.device)[:, None] * w + torch.arange(w, device=y.device)[None, :])[:, None, :]
    window = min(2 * r + 1, h) * min(2 * r + 1, w) * c  # values in the largest window
    out, found = [], []
    norms = torch.linalg.vector_norm(y.reshape(b, -1), dim=1).tolist()  # one host read per step, not per sample
    for one, y_norm in zip(y.reshape(b, h, w, c), norms):
        # sum_W |y - t x_i|^2 = sum_W |y|^2 - 2 t sum_W y . x_i + t^2 sum_W |x_i|^2; the first term
        # is the same for every item of a pixel and cancels in its softmax (and its entropy). The
        # middle term's window sums are two matrix products: x_i's row r times
        # M[r][(c', ch), c] = y[r, c', ch] [|c - c'| <= r] (one product batched over rows, no
        # elementwise pass), then the band matrix along the columns times every row's result.
        # Guard: the expansion's rounding is relative to |y| and |x_i|, not to the distances; where
        # its bound (refine.py, with the window's length) exceeds REFINE_NATS, this sample's
        # logits are formed directly from the differences instead.
        direct = float(expanded_error(2 * s * t, s * t * t, y_norm, tab.r_max, tab.log_pi_abs, window)) > REFINE_NATS
        m = None if direct else (one[..., None] * bw[None, :, None, :]).reshape(h, w * c, w)
        acc = _StreamingSoftmax(h, w, c, keep, y.device)  # layout (row, item, column)
        for lo in range(0, n, items):
            hi = min(n, lo + items)
            if direct:  # log pi_i - s sum_W |y - t x_i|^2, differences first
                sq = torch.sub(one[None], tab.images[lo:hi].reshape(hi - lo, h, w, c), alpha=t).square_().sum(-1)
                boxed = torch.matmul(bh, torch.matmul(sq, bw)).transpose(0, 1)  # (H, n, W)
                logits = torch.sub(tab.log_pi[None, lo:hi, None], boxed, alpha=s)
            else:
                cross = torch.matmul(bh, torch.bmm(tab.rows[:, lo:hi], m).reshape(h, -1)).reshape(h, hi - lo, w)
                logits = torch.add(tab.log_pi[None, lo:hi, None] - (s * t * t) * tab.window_norms[:, lo:hi], cross,
                                   alpha=2 * s * t)
            values = tab.rows[:, lo:hi].reshape(h, hi - lo, w, c)
            ids = torch.arange(lo, hi, device=y.device)[None, :, None]
            acc.add(logits, lambda e, v=values: torch.stack([(e * v[..., ch]).sum(1) for ch in range(c)], -1),
                    ids, pix)
        out.append(acc.denoised().reshape(p, c))  # (H, W, C) -> (P, C)
        if keep:
            found.append(acc.sources())
    if not keep:
        return torch.stack(out), None
    parts = [torch.stack([getattr(f, k).reshape(p, *getattr(f, k).shape[2:]) for f in found])
             for k in ("ids", "pixels", "weights", "omitted", "entropy")]
    return torch.stack(out), PixelSources(*parts)


def image_rows(images: torch.Tensor, shape: tuple) -> torch.Tensor:
    """(N, H W, C) images as (H, N, W C): row r of every item, contiguous."""
    h, w = shape
    return images.reshape(len(images), h, w * images.shape[-1]).transpose(0, 1).contiguous()


def window_norms(images: torch.Tensor, shape: tuple, size: int) -> torch.Tensor:
    """(H, N, W): each item's squared norm (over channels) summed over every pixel's clipped window."""
    h, w = shape
    sq = images.square().sum(-1).reshape(-1, h, w)
    r = size // 2
    boxed = torch.matmul(band(h, r, images.device), torch.matmul(sq, band(w, r, images.device)))
    return boxed.transpose(0, 1).contiguous()


class _ElsClass:
    """The pixels of one clip class for one window size: flat indices (P_c,), the window's flat
    offsets per pixel (P_c, f), and the training windows (N, P_c, f C) when cached."""

    def __init__(self, rows, cols, cuts, r: int, width: int, device):
        (ra, rb), (ca, cb) = cuts
        dr = torch.arange(-r + ra, r - rb + 1, device=device)
        dc = torch.arange(-r + ca, r - cb + 1, device=device)
        rr = torch.as_tensor(rows, device=device)[:, None, None] + dr[None, :, None]
        cc = torch.as_tensor(cols, device=device)[:, None, None] + dc[None, None, :]
        win = (rr[:, None] * width + cc[None, :]).reshape(len(rows) * len(cols), -1)  # (P_c, f)
        centre = torch.as_tensor(rows, device=device)[:, None] * width + torch.as_tensor(cols, device=device)[None, :]
        self.pixels, self.window = centre.reshape(-1), win
        self.cached = None  # (training windows (N, P_c, f C), their squared norms (N P_c,))

    def windows(self, images: torch.Tensor, lo: int, hi: int):
        """Training windows of items lo..hi at this class's positions, and their squared norms."""
        if self.cached is not None:
            return self.cached[0][lo:hi], self.cached[1][lo * len(self.pixels):hi * len(self.pixels)]
        xp = images[lo:hi][:, self.window].reshape(hi - lo, len(self.pixels), -1)
        return xp, (xp * xp).sum(-1).reshape(-1)


def els_evaluate(y: torch.Tensor, t: float, classes: list, images: torch.Tensor, log_pi: torch.Tensor,
                 keep: int, device, direct: bool = False) -> tuple[torch.Tensor, PixelSources | None]:
    """ELS for states y (B, P, C) over training images (N, P, C), one clip class at a time;
    `direct`: logits from the differences themselves, not the expanded product (the guard).

    A sample's numbers never depend on its batch: samples go in groups of at most ELS_GROUP, the
    chunks of items are sized for a full group whatever the group's size, and the two products
    (logits, weighted centres) are one matrix product per sample; the chunks of a one-pixel clip
    class stay below ONE_OUTPUT_SUM_LIMIT items. A product over the batch (an einsum, or one
    matmul broadcast over it) let BLAS pick its kernel by the batch size: on an AVX-512 CPU the
    per-pixel sources of a sample alone and in a batch of five differed in the last bit
    (tests/test_models_reference.py::test_batch_independence)."""
    b, p, c = y.shape
    out = torch.empty(b, p, c, dtype=F64, device=device)
    srcs = None
    if keep:
        srcs = PixelSources(torch.full((b, p, keep), -1, dtype=torch.int64, device=device),
                            torch.full((b, p, keep), -1, dtype=torch.int64, device=device),
                            torch.zeros(b, p, keep, dtype=F64, device=device),
                            torch.zeros(b, p, dtype=F64, device=device), torch.zeros(b, p, dtype=F64, device=device))
    for lo in range(0, b, ELS_GROUP):
        rows = slice(lo, min(b, lo + ELS_GROUP))
        _els_group(y[rows], t, classes, images, log_pi, keep, device, direct, out[rows],
                   None if srcs is None else PixelSources(*(getattr(srcs, k)[rows] for k in _SOURCE_FIELDS)))
    return out, srcs


def _els_group(y, t, classes, images, log_pi, keep, device, direct, out, srcs) -> None:
    """els_evaluate for one group of at most ELS_GROUP samples, written into `out` and `srcs`."""
    b, p, c = y.shape
    n = images.shape[0]
    s = 1.0 / (2 * (1 - t) ** 2)
    for cls in classes:
        pc, f = cls.window.shape
        yp = y[:, cls.window].reshape(b, pc, f * c)  # (b, P_c, f C)
        acc = _StreamingSoftmax(b, pc, c, keep, device)
        per_item = ELS_GROUP * pc * pc * (f * c if direct else 1)  # a full group's, whatever b is
        items = max(1, min(n, CHUNK_ENTRIES * (SOURCES_CHUNK if keep else 1) // max(1, per_item)))
        if pc == 1:  # a one-pixel class: a lone sample's sums over a chunk have one output each
            items = min(items, ONE_OUTPUT_SUM_LIMIT - 1)
        for lo in range(0, n, items):
            hi = min(n, lo + items)
            xp, xx = cls.windows(images, lo, hi)  # (n, P_c, f C), |x_u|^2 (n P_c,)
            e_count = (hi - lo) * pc
            if direct:  # log pi_i - s |y_p - t x_u|^2, differences first: (b, E, P_c)
                diff = torch.sub(yp[:, None], xp.reshape(1, e_count, 1, f * c), alpha=t)
                logits = torch.sub(log_pi[lo:hi].repeat_interleave(pc)[None, :, None], diff.square_().sum(-1),
                                   alpha=s)
            else:
                # logit = [log pi_i - s t^2 |x_u|^2] + 2 s t y_p . x_u - s |y_p|^2; the last term is
                # the same for every entry of a pixel and cancels in its softmax (and its entropy)
                flat = xp.reshape(e_count, f * c)
                logits = torch.empty(b, e_count, pc, dtype=F64, device=device)
                for i in range(b):
                    torch.mm(flat, yp[i].T, out=logits[i])
                logits.mul_(2 * s * t).add_((log_pi[lo:hi].repeat_interleave(pc) - (s * t * t) * xx)[None, :, None])
            centres = images[lo:hi][:, cls.pixels].reshape(e_count, c)  # x_{i,u}: the windows' centre pixels
            ids = torch.arange(lo, hi, device=device).repeat_interleave(pc)[None, :, None]
            pix = cls.pixels.repeat(hi - lo)[None, :, None]
            acc.add(logits, lambda e: _per_sample_mm(e, centres), ids, pix)
        out[:, cls.pixels] = acc.denoised()
        if keep:
            got = acc.sources()
            k = got.ids.shape[2]
            srcs.ids[:, cls.pixels, :k], srcs.pixels[:, cls.pixels, :k] = got.ids, got.pixels
            srcs.weights[:, cls.pixels, :k] = got.weights
            srcs.omitted[:, cls.pixels], srcs.entropy[:, cls.pixels] = got.omitted, got.entropy


def _per_sample_mm(e: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(b, P, C): sum over entries of the weights e (b, E, P) times the centres (E, C), one product
    per sample (batch-independent rounding; els_evaluate)."""
    out = torch.empty(e.shape[0], e.shape[2], centres.shape[1], dtype=F64, device=e.device)
    for i in range(e.shape[0]):
        torch.mm(e[i].T, centres, out=out[i])
    return out


class _LocalModel:
    """What LS and ELS share: the image layout, the step's window size, the coordinates and the
    per-pixel sources (module docstring)."""

    supports_sensitivity = False
    source_kind = "item shares"  # whole-item sources: each item's share of the pixels' weight

    def __init__(self, training_set, log_pi: np.ndarray, config: SamplerConfig):
        shape = training_set.describe.get("image_shape")
        if not shape:
            name = training_set.describe.get("name", "this data set")
            raise CdmInputError(f"model {self.name} works on images; {name} is not an image data set")
        self.training_set, self.log_pi = training_set, log_pi
        self.h, self.w = int(shape[0]), int(shape[1])
        self.c = int(shape[2]) if len(shape) > 2 else 1
        dev = training_set.device
        active = np.flatnonzero(np.isfinite(log_pi))  # items of weight zero never enter a softmax
        self.item_ids = torch.as_tensor(active, device=dev)
        # per-channel mean: the only shift every position shares (module docstring)
        full_centre = training_set.centre.reshape(self.h * self.w, self.c)
        self.channel_mean = full_centre.mean(0)
        self.offset = (full_centre - self.channel_mean).reshape(-1)  # per-feature centre minus channel mean
        pts = training_set.points[self.item_ids] + self.offset
        self.images = pts.reshape(len(active), self.h * self.w, self.c)
        self.log_pi_t = torch.as_tensor(log_pi[active], dtype=F64, device=dev)
        self.sizes = config.patch_sizes
        self.grid = config.start + (1.0 - config.start) * np.arange(config.steps) / config.steps
        self.keep = config.pixel_sources
        # the magnitudes of the rounding guard of the expanded logits (refine.expanded_error)
        self.r_max = float(torch.linalg.vector_norm(self.images.reshape(len(active), -1), dim=1).max()) \
            if len(active) else 0.0
        self.log_pi_abs = float(self.log_pi_t.abs().max()) if len(active) else 0.0

    def begin(self, scaled):
        return None  # no smoothing draws (sigma is 0 for local models)

    def size_at(self, t: float) -> int:
        return self.sizes[int(np.argmin(np.abs(self.grid - t)))]

    def denoise(self, state, x, t, sources=False, draws=False):
        b = len(x)
        y = (x + t * self.offset).reshape(b, self.h * self.w, self.c)
        den, pix = self.evaluate(y, t, self.size_at(t), self.keep if sources else 0)
        smoothed = den.reshape(b, -1) - self.offset
        src = None
        if pix is not None:
            pix.ids = torch.where(pix.ids >= 0, self.item_ids[pix.ids.clamp_min(0)], -1)
            src = self.item_shares(pix)
        bound = torch.full((b,), self.images.shape[0] * self.h * self.w * FLUSH, dtype=F64, device=x.device)
        return StepResult(smoothed, bound, torch.ones(b, dtype=F64, device=x.device), src, pixels=pix)

    def item_shares(self, pix: PixelSources) -> Sources:
        """Each item's share of the kept per-pixel weight, averaged over pixels (sums to 1 minus
        the mean omitted weight). Not a blend that reproduces the sample: the pixel sources do."""
        b, p, _ = pix.ids.shape
        shares = torch.zeros(b, self.training_set.n + 1, dtype=F64, device=pix.ids.device)
        idx = torch.where(pix.ids >= 0, pix.ids, self.training_set.n).reshape(b, -1)
        shares.scatter_add_(1, idx, pix.weights.reshape(b, -1) / p)
        return Sources.from_dense(shares[:, :-1])

    def describe(self) -> dict:
        ts = self.training_set
        return {"model": self.name, "strategy": "streamed softmax", "index": ts.kind, "device": str(ts.device),
                "backend": "local", "sources": self.source_kind, "patch_sizes": list(self.sizes)}


class LocalScore(_LocalModel):
    """LS: each pixel weighs training images by its clipped window alone."""

    name = "ls"

    def __init__(self, training_set, log_pi, config):
        super().__init__(training_set, log_pi, config)
        self._size = None  # the window size of `self.tables` (schedules change size rarely: one kept)
        self.rows = image_rows(self.images, (self.h, self.w))
        self.tables = None

    def evaluate(self, y, t, size, keep):
        if self._size != size:
            self.tables = LsTables(self.images, self.rows, window_norms(self.images, (self.h, self.w), size),
                                   self.log_pi_t, (self.h, self.w), self.r_max, self.log_pi_abs)
            self._size = size
        return ls_evaluate(y, t, size, self.tables, keep)


class EquivariantLocalScore(_LocalModel):
    """ELS: each pixel compares its window with every training window clipped the same way."""

    name = "els"

    def __init__(self, training_set, log_pi, config):
        super().__init__(training_set, log_pi, config)
        self._classes: dict[int, list] = {}

    def classes(self, size: int) -> list:
        """The clip classes of window size `size` (patches.clip_classes), built once per size;
        their training windows cached when they fit in CACHE_BYTES."""
        if size not in self._classes:
            r, dev = size // 2, self.images.device
            built = [_ElsClass(rows, cols, (rcut, ccut), r, self.w, dev)
                     for rcut, rows in patches.clip_classes(self.h, r)
                     for ccut, cols in patches.clip_classes(self.w, r)]
            n = self.images.shape[0]
            if sum(8 * n * cl.window.numel() * self.c for cl in built) <= CACHE_BYTES:
                for cl in built:
                    cl.cached = cl.windows(self.images, 0, n)
            self._classes[size] = built
        return self._classes[size]

    def evaluate(self, y, t, size, keep):
        classes = self.classes(size)
        s = 1.0 / (2 * (1 - t) ** 2)
        window = max(cl.window.shape[1] for cl in classes) * self.c
        # the guard of the expanded logits (as for LS): samples whose rounding bound exceeds
        # REFINE_NATS are evaluated from the differences themselves
        bound = expanded_error(2 * s * t, s * t * t, torch.linalg.vector_norm(y.reshape(len(y), -1), dim=1),
                               self.r_max, self.log_pi_abs, window)
        direct = bound > REFINE_NATS
        if not bool(direct.any()):
            return els_evaluate(y, t, classes, self.images, self.log_pi_t, keep, y.device)
        parts = [(idx, els_evaluate(y[idx], t, classes, self.images, self.log_pi_t, keep, y.device, direct=flag))
                 for flag, idx in ((False, torch.nonzero(~direct).flatten()), (True, torch.nonzero(direct).flatten()))
                 if len(idx)]
        out = torch.empty_like(y)
        for idx, (den, _) in parts:
            out[idx] = den
        if not keep:
            return out, None
        merged = [torch.empty((len(y),) + getattr(parts[0][1][1], k).shape[1:], dtype=getattr(parts[0][1][1], k).dtype,
                              device=y.device) for k in _SOURCE_FIELDS]
        for idx, (_, src) in parts:
            for m, k in zip(merged, _SOURCE_FIELDS):
                m[idx] = getattr(src, k)
        return out, PixelSources(*merged)
