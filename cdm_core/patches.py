"""Patch-size schedules of the local models (ls, els): parsing, published presets, cost.

A schedule is text: one odd size (`7`: the same window at every step), one odd size per step
(`3,3,5,...`, as many as the sampler's steps, in step order: the first entry is the first step,
the noisiest), or a published preset by name. Presets are Kamb & Ganguli's (arXiv 2412.20292)
schedules, given from low noise to high noise over the 20 steps of a cosine schedule with
signal alpha(s) = cos(s / 1.008 * pi / 2), s = (j + 1) / 20 for entry j. They are mapped to our
time grid by signal-to-noise ratio: in our convention x_t = t x_1 + (1 - t) z the ratio is
t / (1 - t), theirs alpha / sqrt(1 - alpha^2); each of our steps takes the entry whose log ratio
is nearest. Their images were 32 x 32 in [-1, 1]; ours keep their own size and units, so a preset
is a starting point.

Pure Python (no torch): the configuration validates schedules and the cost model counts their
work before anything runs.
"""

from __future__ import annotations

import math

PRESETS = {
    "fashion-resnet": (3, 3, 5, 5, 7, 7, 9, 9, 9, 11, 11, 11, 13, 13, 13, 15, 15, 15, 17, 17),
    "fashion-unet": (3, 3, 5, 5, 7, 7, 7, 9, 11, 11, 11, 13, 15, 15, 21, 23, 25, 25, 25, 25),
    "mnist-resnet": (3, 3, 5, 5, 5, 7, 7, 7, 9, 9, 11, 11, 11, 11, 13, 15, 15, 15, 15, 15),
    "mnist-unet": (3, 3, 3, 5, 5, 7, 7, 7, 9, 9, 9, 11, 13, 15, 17, 21, 23, 23, 25, 27),
    "cifar-resnet": (3, 3, 3, 3, 5, 5, 5, 7, 7, 7, 7, 9, 9, 11, 11, 13, 15, 17, 17, 17),
}
DEFAULT_PRESET = "fashion-resnet"  # what ls / els use when no schedule is given
MAX_PATCH = 999  # sizes beyond 2 max(H, W) - 1 all cover the image; this only bounds the text


class ScheduleError(ValueError):
    """A schedule that cannot be used, with the one-line reason."""


def preset_log_snr() -> list[float]:
    """log SNR of each preset entry j (low noise first): alpha = cos(s / 1.008 pi / 2), s = (j+1)/20."""
    out = []
    for j in range(20):
        alpha = math.cos((j + 1) / 20 / 1.008 * math.pi / 2)
        out.append(math.log(alpha / math.sqrt(1 - alpha * alpha)))
    return out


def parse(text: str, steps: int) -> tuple[int, ...] | str:
    """Check a schedule's text against `steps`; return the sizes per step, or the preset's name.
    Raises ScheduleError with a one-line reason."""
    text = str(text).strip()
    if text in PRESETS:
        return text
    if not text:
        return DEFAULT_PRESET
    parts = [p.strip() for p in text.split(",")]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise ScheduleError(f"patch schedule must be odd sizes (7 or 3,3,5,...) or one of "
                            f"{', '.join(PRESETS)}, got {text!r}") from None
    bad = [k for k in sizes if k < 1 or k % 2 == 0 or k > MAX_PATCH]
    if bad:
        raise ScheduleError(f"patch sizes must be odd and between 1 and {MAX_PATCH}, got {bad[0]}")
    if len(sizes) == 1:
        return sizes * steps
    if len(sizes) != steps:
        raise ScheduleError(f"patch schedule has {len(sizes)} sizes for {steps} steps: give one size or one per step")
    return sizes


def sizes_per_step(text: str, start: float, steps: int) -> tuple[int, ...]:
    """The patch size of each Euler step of the grid t_k = start + (1 - start) k / steps, k < steps."""
    parsed = parse(text, steps)
    if not isinstance(parsed, str):
        return parsed
    table, logs = PRESETS[parsed], preset_log_snr()
    out = []
    for k in range(steps):
        t = start + (1.0 - start) * k / steps
        ours = -math.inf if t == 0 else math.log(t / (1 - t))
        out.append(table[min(range(20), key=lambda j: (abs(logs[j] - ours) if math.isfinite(ours) else -j))])
    return tuple(out)


def clip_classes(length: int, radius: int) -> list[tuple[tuple[int, int], list[int]]]:
    """Positions 0..length-1 grouped by how a window of half-width `radius` is clipped there:
    ((cut before, cut after), positions). Interior positions share one class."""
    groups: dict[tuple[int, int], list[int]] = {}
    for p in range(length):
        groups.setdefault((max(0, radius - p), max(0, p + radius - (length - 1))), []).append(p)
    return list(groups.items())


def els_work_per_step(shape: tuple, size: int, n_train: int) -> float:
    """Floating-point work of one ELS evaluation of one sample: for each clip class of |P| pixels
    and f window offsets, |P|^2 N distances of f C terms (a product) and a softmax over them."""
    h, w = shape[0], shape[1]
    c = shape[2] if len(shape) > 2 else 1
    r = size // 2
    total = 0.0
    for (ra, rb), rows in clip_classes(h, r):
        for (ca, cb), cols in clip_classes(w, r):
            p = len(rows) * len(cols)
            f = (2 * r + 1 - ra - rb) * (2 * r + 1 - ca - cb)
            total += p * p * n_train * (2.0 * f * c + 8.0)
    return total


def ls_work_per_step(shape: tuple, n_train: int) -> float:
    """LS per sample and step: N x H x W logits, each from two small matrix products (the window
    sums, at matrix speed) and a dozen elementwise passes (logits, softmax, weighted sum per
    channel); counted as the elementwise operations, which dominate the time."""
    c = shape[2] if len(shape) > 2 else 1
    return n_train * shape[0] * shape[1] * (5.0 * c + 12.0)
