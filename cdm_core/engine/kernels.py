"""The numerical kernels every strategy and search shares, each written once.

- `row_blocks`: the chunk loop. Work over (rows x values per row) is cut into blocks of whole rows
  that keep temporaries under a budget of float64 values, so memory is bounded whatever B or N.
- `expanded_logits`: the dense logit formula in expanded (matrix-product) form,
      log pi_i + a q . x_i - c |x_i|^2        (a = t/(1-t)^2, c = t^2/(2(1-t)^2)),
  which runs at the float64 matrix-product roofline; its rounding is bounded and guarded in
  refine.py (far from the data's centre the direct form replaces it).
- `sort_by_distance` and `merge_nearest`: the top-k merge of neighbour candidates found block by
  block (points in blocks, shards, or a search and its dense fallback), ordered by distance with
  ties broken by id, so the order never depends on how the search was split.
"""

from __future__ import annotations

import torch


def row_blocks(rows: int, values_per_row: int, budget: int):
    """(lo, hi) blocks of whole rows covering range(rows), each about `budget` values or one row."""
    step = max(1, budget // max(1, values_per_row))
    for lo in range(0, rows, step):
        yield lo, min(lo + step, rows)


def expanded_logits(dots: torch.Tensor, a: float, static: torch.Tensor) -> torch.Tensor:
    """In place: dots (R, N) = q . x_i become log pi_i + a q . x_i - c |x_i|^2, with
    static = log pi_i - c |x_i|^2 (N,). Returns `dots`."""
    return dots.mul_(a).add_(static)


def sort_by_distance(ids: torch.Tensor, dist: torch.Tensor):
    """Rows ordered by distance, ties by id (so the order never depends on the search); -1 ids
    (padding) sort after every real id of the same distance."""
    by_id = torch.argsort(torch.where(ids >= 0, ids, torch.iinfo(torch.int64).max), dim=1, stable=True)
    ids, dist = torch.gather(ids, 1, by_id), torch.gather(dist, 1, by_id)
    order = torch.argsort(dist, dim=1, stable=True)
    return torch.gather(ids, 1, order), torch.gather(dist, 1, order)


def merge_nearest(parts, k: int):
    """The k nearest of several candidate blocks [(ids (Q, k_s), distances (Q, k_s)), ...] for the
    same queries: concatenated, ordered by (distance, id), cut to k columns."""
    ids = torch.cat([p[0] for p in parts], 1)
    dist = torch.cat([p[1] for p in parts], 1)
    ids, dist = sort_by_distance(ids, dist)
    return ids[:, :k], dist[:, :k]
