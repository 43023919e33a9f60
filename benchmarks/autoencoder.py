"""Autoencoder training for latent space (#16): wall time on this machine and reconstruction
error against PCA with the same number of components (the baseline, fitted in the same run).

    .venv/bin/python benchmarks/autoencoder.py [digits mnist fashion-mnist ...]

Trains in a temporary cache directory (never the user's), so every set really trains."""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np


def main(names: list[str]) -> None:
    os.environ["CDM_CACHE_DIR"] = tempfile.mkdtemp(prefix="cfdm-ae-bench-")
    import torch

    from cdm_core import SamplerConfig
    from cdm_core.data.registry import availability, load
    from cdm_core.latent.space import latent_space
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| data set | N x D | K | steps | train + encode (s) | relative error | PCA-K relative error | ratio |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        if not availability(name)[0]:
            print(f"| {name} | unavailable | | | | | | |")
            continue
        ds = load(name)
        k = 16
        t0 = time.perf_counter()
        space = latent_space(ds, SamplerConfig(space="latent", latent_dim=k))
        seconds = time.perf_counter() - t0
        x = ds.points.astype(np.float64)
        xc = x - x.mean(0)
        _, s, _ = np.linalg.svd(xc[:20000], full_matrices=False)  # PCA spectrum (a 20k-row subset is plenty)
        pca_rel = float((s[k:] ** 2).sum() / (s ** 2).sum())
        from cdm_core.latent.autoencoder import steps_for
        print(f"| {name} | {ds.n} x {ds.dim} | {k} | {steps_for(ds.n)} | {seconds:.1f} | {space.relative_error:.4f} "
              f"| {pca_rel:.4f} | {space.relative_error / pca_rel:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["digits", "faces", "mnist", "emoji", "fashion-mnist"])
