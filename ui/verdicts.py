"""The Sources page's words: both memorisation verdicts of one sample, and which samples use an
item. Plain functions (no Streamlit), so tests call them directly."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cdm_core.analysis import dust, metrics


def verdict(res, i: int) -> str:
    """Both verdicts, named apart: what the exact sources say (copy or blend; close to an item it
    is not made of), then the distance criterion (d1/d2 < 1/3, Gu et al. 2025)."""
    one = slice(i, i + 1)
    ratio = float(metrics.nn_ratio(res.nn_dist[one])[0])
    eff = float(metrics.effective_sources(res.source_weights[one])[0])
    nn, d = int(res.nn_ids[i, 0]), float(res.nn_dist[i, 0])
    main, w_main = int(res.source_ids[i, 0]), float(res.source_weights[i, 0])
    where = " in latent space" if res.config.space == "latent" else ""
    if metrics.is_copy(res)[i]:
        near = metrics.nearest_tied(res)[i]
        dups = [int(j) for j in near if j != nn]
        also = f" (stored {len(dups) + 1} times: also {', '.join(f'#{j}' for j in dups[:4])})" if dups else ""
        text = (f"**Copy** of training item #{nn}{where}{also} (exact sources): it carries "
                f"{float(metrics.copy_weight_of(res)[i]):.2%} of the blend weight, and the sample lies "
                f"{dust.fmt(d)} from it, its nearest item.")
    elif res.ran.get("sources") == "item shares":  # ls / els: pixels from many items
        text = (f"**New mosaic** of pixels from about {eff:.1f} training items (effective number, by each item's share "
                f"of the exact per-pixel weights); the largest share is #{main}'s, {w_main:.3g}.")
    elif res.ran.get("sources") == "affine":
        text = (f"**Affine combination** of the training items (the Gaussian model's signed weights, summing to one): "
                f"about {eff:.1f} effective items by |weight|; the largest is #{main} with weight {w_main:.3g}.")
    else:
        text = (f"**New blend** of about {eff:.1f} training items (effective number of exact sources); main source "
                f"#{main} with weight {w_main:.3g}.")
        if metrics.nearest_not_a_source(res)[i]:
            text += (f" It is close to #{nn}{where} ({dust.fmt(d)} away), which it is **not made of** (weight below "
                     f"{dust.DUST:.0e}).")
        elif nn != main:
            text += f" Its nearest item is #{nn}{where}, {dust.fmt(d)} away."
    crit = "memorised" if ratio < metrics.COPY_RATIO else "not memorised"
    return text + f"  \n*Distance criterion* ({metrics.CRITERION}): d1/d2 = {ratio:.3g}, **{crit}**."


def users_of(res, j: int) -> pd.DataFrame:
    """Samples that blend item j with more than dust of their weight (analysis/dust.py)."""
    rows, cols = np.nonzero((res.source_ids == j) & dust.is_source(res.source_weights))
    df = pd.DataFrame({"sample": rows, "weight": res.source_weights[rows, cols]})
    return df.sort_values("weight", ascending=False).reset_index(drop=True)
