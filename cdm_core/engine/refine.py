"""Guard for the expanded (matrix-product) form of the logits, far from the data's centre.

The dense strategies form a query's logits as one matrix product,
    log pi_i + a y . x_i - c |x_i|^2      (a = t/(1-t)^2, c = t^2/(2(1-t)^2), up to -s|y|^2),
which runs at the float64 matrix-product roofline. Its rounding error is not relative to the
distances that decide the weights but to the points' distance from the centre R = max |x_i - c|:
    |fl(logit_i) - logit_i| <= E = (gamma_D + 4u) (a |y| R + c R^2) + 4u |log pi|_max,
with u = 2^-53 and gamma_D the float64 dot-product bound (docs/numerics.md, section 2b). On
compact data E is below 1e-8 nats but in the last steps of long runs. On data whose clusters lie
far apart (two clusters 1e6 apart: R = 5e5) E reaches 1e-2 nats in the late steps, and weights
would be wrong by a percent while every reported bound stayed tiny.

Guard: a query whose E exceeds `REFINE_NATS` has its logits recomputed in the direct form
log pi_i - s |y - t x_i|^2 (differences formed first: the error is relative to the distance, not
to R) for every point whose expanded logit is within ln(1e30) + 2E + 1 of the query's maximum.
Every other point has exact weight below 1e-30 / e of the maximum's and is left out, as the flush
leaves it out anyway (its mass is inside the flushed-mass bound). The decision is per query.
"""

from __future__ import annotations

import math

import torch

from cdm_core.engine.blend import CHUNK_VALUES, F64
from cdm_core.engine.kernels import row_blocks

U64 = 2.0 ** -53  # float64 unit roundoff
LN_FLUSH = math.log(1e30)  # weights below exp(-LN_FLUSH) of the largest are flushed
REFINE_NATS = 1e-8  # a query whose expanded logits may be off by more than this is refined


def gamma64(dim: int) -> float:
    """Relative bound of a float64 dot product of length `dim`, any summation order, 1% margin."""
    return 1.01 * dim * U64 / (1 - dim * U64)


def expanded_error(a: float, c: float, y_norm: torch.Tensor, r_max: float, log_pi_abs: float,
                   dim: int) -> torch.Tensor:
    """Bound E (per query, shape of `y_norm`) on the rounding of the expanded logits, where
    `y_norm` bounds |y| (for the factorised form |x| + |sigma eps|: both products are bounded)."""
    g = gamma64(dim) + 4 * U64
    return g * (a * y_norm * r_max + c * r_max * r_max) + 4 * U64 * log_pi_abs


def refine_(lg: torch.Tensor, y: torch.Tensor, t: float, x: torch.Tensor, log_pi: torch.Tensor,
            err: torch.Tensor) -> int:
    """Recompute, in place, the logits lg (q, N) of queries y (q, D) whose bound err (q,) exceeds
    REFINE_NATS (see the module docstring); x are the centred points (N, D), or a function giving
    the centred rows of point ids. Returns how many queries were refined."""
    rows = torch.nonzero(err > REFINE_NATS).flatten()
    if len(rows) == 0:
        return 0
    s = 1.0 / (2 * (1 - t) ** 2)
    sub = lg[rows]
    margin = LN_FLUSH + 2 * err[rows] + 1.0
    pairs = torch.nonzero(sub >= sub.amax(1, keepdim=True) - margin[:, None])  # (P, 2): (row in sub, point)
    vals = torch.empty(len(pairs), dtype=F64, device=lg.device)
    rows_of = x.__getitem__ if isinstance(x, torch.Tensor) else x
    for lo, hi in row_blocks(len(pairs), y.shape[1], CHUNK_VALUES):
        pr = pairs[lo:hi]
        diff = y[rows[pr[:, 0]]] - t * rows_of(pr[:, 1])
        vals[lo:hi] = log_pi[pr[:, 1]] - s * torch.einsum("pd,pd->p", diff, diff)
    sub.fill_(-math.inf)
    sub[pairs[:, 0], pairs[:, 1]] = vals
    lg[rows] = sub
    return len(rows)
