"""The figures of "attribute your samples": a sample beside its closest blend and nearest items,
and the samples on the training map, each placed at its closest blend. Regenerated from a
manifest whose options name the samples file (written into the bundle beside it).

options.attribution: {"samples": path, "noise": path or null, "k": int, "ratio": float, "sample": int,
"map": MapConfig fields}; paths are relative to the bundle folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdm_core.config import SamplerConfig
from cdm_core.errors import CdmInputError
from cdm_core.report import figures

FIGURES = ("attribution", "attribution_map")
SAMPLES_FILE = "attribution_samples.npy"  # the uploaded samples, written into the bundle
NOISE_FILE = "attribution_noise.npy"  # their start noise, when given


def options(k: int, ratio: float, sample: int, noise: bool, map_method: str = "pca") -> dict:
    """The manifest options of an attribution bundle whose files are SAMPLES_FILE (and NOISE_FILE)."""
    return {"attribution": {"samples": SAMPLES_FILE, "noise": NOISE_FILE if noise else None, "k": int(k),
                            "ratio": float(ratio), "sample": int(sample), "map": {"method": map_method}}}


def with_paths_from(opts: dict, base_dir: Path | None) -> dict:
    """options.attribution with its relative file paths resolved against the bundle folder."""
    att = dict(opts.get("attribution") or {})
    for key in ("samples", "noise"):
        if att.get(key) and base_dir is not None and not Path(att[key]).is_absolute():
            att[key] = str(Path(base_dir) / att[key])
    return opts | {"attribution": att} if att else opts


def sample_figure(ds, samples: np.ndarray, att, i: int, shown: int = 6):
    """Sample i, then its closest blend's items (weight >= 1e-3, largest first), then its nearest items."""
    if not ds.is_image:
        return figures.sources_scatter(ds.points[:, :2], samples[i, :2], att.blend_ids[i], att.blend_weights[i],
                                       att.nn_ids[i])
    keep = att.blend_weights[i] >= 1e-3
    ids, w = att.blend_ids[i][keep][:shown], att.blend_weights[i][keep][:shown]
    near, dist = att.nn_ids[i][:shown], att.nn_dist[i][:shown]
    verdict = "memorised" if att.memorised[i] else "not memorised"
    return figures.sources_images_figure(
        samples[i], f"sample<br>#{i}", ds.points[ids],
        [figures.tile_title(ds, int(j), f"w={v:.2f}") for j, v in zip(ids, w)], ds.points[near],
        [f"#{j}<br>d={d:.3g}" for j, d in zip(near, dist)], ds.image_shape,
        title=f"#{i}: {verdict} (d1/d2 = {att.nn_ratio[i]:.2f}), blend residual {att.blend_residual[i]:.2g}",
        row_labels=("sample, blend", "nearest (L2)"))


def map_positions(ds, att, map_cfg: dict | None = None, callback=None):
    """(embedding, sample positions (n, 2)): each sample at the weighted map position of its closest blend."""
    from cdm_core.analysis.embedding import MapConfig, compute_map, place_by_sources
    emb = compute_map(ds, MapConfig(**(map_cfg or {"method": "pca"})), callback=callback)
    return emb, place_by_sources(emb, att.blend_ids, att.blend_weights)


def map_figure(ds, att, emb, pos: np.ndarray, i: int, for_paper: bool = False):
    """The training map with the samples (coloured by d1/d2 on a fixed 0-1 scale), edges from
    sample i to its blend's items."""
    from cdm_core.analysis.embedding import source_edges
    edges = source_edges(emb, pos, att.blend_ids, att.blend_weights, [i])
    fig = figures.map_figure(emb.positions, emb.ids, ds.labels, pos, edges, label_names=ds.label_names,
                             sample_values=att.nn_ratio, value_name="d1/d2", value_range=(0.0, 1.0), selected=i)
    if for_paper:
        figures.paper_map(fig)
    return fig


def build(ds, cfg: SamplerConfig, opts: dict, which: list, data: dict, say) -> dict:
    """The attribution figures named in `which`, from options.attribution (module docstring)."""
    from cdm_core.analysis.attribution import attribute
    from cdm_core.analysis.metrics import COPY_RATIO
    from cdm_core.data.files import load_file
    spec = opts.get("attribution")
    if not isinstance(spec, dict) or not spec.get("samples"):
        raise CdmInputError("figures attribution and attribution_map need options.attribution.samples, "
                            "the samples file")
    samples = load_file(spec["samples"]).points
    noise = load_file(spec["noise"]).points if spec.get("noise") else None
    say("attributing")
    att = attribute(ds, samples, cfg, noise=noise, k=int(spec.get("k", min(64, ds.n))),
                    ratio=float(spec.get("ratio", COPY_RATIO)))
    i = int(spec.get("sample", 0))
    if not 0 <= i < len(samples):
        raise CdmInputError(f"options.attribution.sample must be in [0, {len(samples)}), got {i}")
    data |= {f"attribution_{k}": v for k, v in att.arrays().items()} | {"attribution_sample": np.int64(i)}
    out = {}
    if "attribution" in which:
        out["attribution"] = sample_figure(ds, np.asarray(samples, np.float64), att, i)
    if "attribution_map" in which:
        say("map")
        emb, pos = map_positions(ds, att, spec.get("map"))
        out["attribution_map"] = map_figure(ds, att, emb, pos, i, for_paper=True)
        data |= {"map_ids": emb.ids, "map_positions": emb.positions, "attribution_positions": pos}
    return out


def csv_table(arrays: dict) -> str | None:
    """attribution.csv of a bundle's arrays (one row per sample), or None without attribution."""
    if "attribution_nn_ids" not in arrays:
        return None
    cols = ["sample", "nearest", "d1", "d1_d2", "memorised", "blend_main_item", "blend_main_weight", "blend_residual"]
    r = arrays.get("attribution_agreement_r")
    if r is not None:
        cols += ["pearson_r", "r2"]
    lines = [",".join(cols)]
    for s in range(len(arrays["attribution_nn_ids"])):
        row = [s, int(arrays["attribution_nn_ids"][s, 0]), repr(float(arrays["attribution_nn_dist"][s, 0])),
               repr(float(arrays["attribution_nn_ratio"][s])), int(bool(arrays["attribution_memorised"][s])),
               int(arrays["attribution_blend_ids"][s, 0]), repr(float(arrays["attribution_blend_weights"][s, 0])),
               repr(float(arrays["attribution_blend_residual"][s]))]
        if r is not None:
            row += [repr(float(r[s])), repr(float(arrays["attribution_agreement_r2"][s]))]
        lines.append(",".join(str(v) for v in row))
    return "\n".join(lines) + "\n"


def carry_files(m: dict, base_dir: Path | None, out_dir: Path) -> list[str]:
    """Copy the attributed samples (and noise) into the bundle under their bundle names, so the
    bundle regenerates on its own; returns the names written."""
    import shutil
    spec = (m.get("options") or {}).get("attribution")
    if not isinstance(spec, dict):
        return []
    written = []
    for key, name in (("samples", SAMPLES_FILE), ("noise", NOISE_FILE)):
        if not spec.get(key):
            continue
        src = Path(spec[key]) if base_dir is None or Path(spec[key]).is_absolute() else Path(base_dir) / spec[key]
        dst = Path(out_dir) / name
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        written.append(name)
    return written


def bundle_manifest(m: dict) -> dict:
    """The manifest as written into a bundle: the attribution files under their bundle names."""
    spec = (m.get("options") or {}).get("attribution")
    if not isinstance(spec, dict):
        return m
    spec = spec | {"samples": SAMPLES_FILE, "noise": NOISE_FILE if spec.get("noise") else None}
    return m | {"options": m["options"] | {"attribution": spec}}
