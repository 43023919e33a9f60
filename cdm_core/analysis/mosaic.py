"""Patch mosaics: what each pixel of a local-model sample (ls, els) was made of.

A local model's sample is, pixel by pixel, an exact blend of training pixels (its per-pixel
sources, `SampleResult.pixel_source_*`). These functions read one sample's: the main source of
every pixel, the items that gave most of the image and the regions they gave, and one pixel's
sources with their positions. Plain arrays in, plain arrays out (no Streamlit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdm_core.errors import CdmInputError


def has_pixel_sources(result) -> bool:
    return getattr(result, "pixel_source_ids", None) is not None


def _check(result, i: int) -> None:
    if not has_pixel_sources(result):
        raise CdmInputError(f"model {result.config.model} has no per-pixel sources (ls and els have them)")
    if not 0 <= i < len(result.samples):
        raise CdmInputError(f"sample must be in [0, {len(result.samples)}), got {i}")


@dataclass(frozen=True)
class MainSources:
    """Per pixel of one sample (flat, row-major): its largest source."""

    items: np.ndarray  # (P,) int64 training item, -1 where no weight was kept
    pixels: np.ndarray  # (P,) int64 flat pixel inside that item
    weights: np.ndarray  # (P,) float64 its weight
    entropy: np.ndarray  # (P,) float64 entropy of the pixel's full weights, nats
    omitted: np.ndarray  # (P,) float64 weight left out of the kept sources


def main_sources(result, i: int) -> MainSources:
    _check(result, i)
    return MainSources(result.pixel_source_ids[i, :, 0], result.pixel_source_pixels[i, :, 0],
                       result.pixel_source_weights[i, :, 0], result.pixel_entropy[i], result.pixel_source_omitted[i])


@dataclass(frozen=True)
class Region:
    """A training item and the pixels of the sample whose main source it is."""

    item: int
    pixels: np.ndarray  # (P,) bool: the sample's pixels it is the main source of
    sources: np.ndarray  # (P,) int64: for those pixels, the flat pixel inside the item they came from (-1 elsewhere)
    share: float  # the item's share of all kept per-pixel weight of the sample (0..1)
    moved: float  # mean distance in pixels between a region pixel and where it came from


def regions(result, i: int, top: int = 6, width: int | None = None) -> list[Region]:
    """The `top` items that are the main source of most pixels of sample i, largest region first
    (ties by item id). `width`: the image width, for the distance a pixel moved."""
    m = main_sources(result, i)
    p = len(m.items)
    ok = m.items >= 0
    items, counts = np.unique(m.items[ok], return_counts=True)
    order = np.lexsort((items, -counts))[:top]
    w_all = result.pixel_source_weights[i]
    ids_all = result.pixel_source_ids[i]
    out = []
    for j in items[order]:
        mask = m.items == j
        src = np.where(mask, m.pixels, -1)
        moved = 0.0
        if width:
            here = np.flatnonzero(mask)
            there = m.pixels[mask]
            moved = float(np.mean(np.hypot(here // width - there // width, here % width - there % width)))
        out.append(Region(int(j), mask, src, float(w_all[ids_all == j].sum() / p), moved))
    return out


def rank_map(result, i: int, top: int = 8) -> tuple[np.ndarray, list[int]]:
    """(P,) for each pixel the rank (0..top-1) of its main source among the `top` largest regions'
    items, `top` for any other item; and those items."""
    regs = regions(result, i, top)
    items = [r.item for r in regs]
    rank = np.full(len(result.pixel_source_ids[i]), len(items), np.int64)
    for k, r in enumerate(regs):
        rank[r.pixels] = k
    return rank, items


def pixel_sources(result, i: int, pixel: int, width: int) -> list[dict]:
    """The kept sources of one pixel: item, source row and column inside it, weight."""
    _check(result, i)
    if not 0 <= pixel < result.pixel_source_ids.shape[1]:
        raise CdmInputError(f"pixel must be in [0, {result.pixel_source_ids.shape[1]}), got {pixel}")
    ids, pix, w = (a[i, pixel] for a in
                   (result.pixel_source_ids, result.pixel_source_pixels, result.pixel_source_weights))
    return [{"item": int(j), "row": int(q // width), "col": int(q % width), "weight": float(v)}
            for j, q, v in zip(ids, pix, w) if j >= 0]
