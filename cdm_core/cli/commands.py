"""The CLI's sub-commands: each a `register_*` (its flags) and a `cmd_*` (the work)."""

from __future__ import annotations

import json
import sys

import numpy as np

from cdm_core.cli.options import Progress, add_sampler_options, check_out, config_from_args, load_inputs
from cdm_core.errors import CdmInputError


def cmd_sample(a) -> int:
    from cdm_core.data.store import save_result
    from cdm_core.pipeline.run import sample
    check_out(a.out, ".npz")
    cfg = config_from_args(a, trajectory=a.trajectory)
    ds, weights = load_inputs(a)
    res = sample(ds, cfg, weights=weights, callback=Progress("sampling"))
    save_result(a.out, res)
    print(f"wrote {a.out}: {res.samples.shape[0]} samples of {ds.name} (D={ds.dim}) in {res.seconds:.2f} s; "
          f"max truncation bound {res.truncation_bound.max():.2e}; "
          f"{100 * res.dense_fraction:.0f}% of queries over all points", file=sys.stderr)
    if res.ran.get("patch_sizes"):
        print(f"model {res.ran['model']}: patch sizes per step {','.join(map(str, res.ran['patch_sizes']))}; "
              f"per-pixel sources leave out at most {res.pixel_source_omitted.max():.2e} of a pixel's weight",
              file=sys.stderr)
    if getattr(res, "space", None):
        print(f"latent space: K={res.space['latent_dim']}, autoencoder {res.space['autoencoder_hash']} "
              f"({res.space['origin']}), reconstruction RMSE {res.space['reconstruction_rmse']:.3g} data units "
              f"({100 * res.space['relative_error']:.1f}% of the pixel variance)", file=sys.stderr)
    return 0


def cmd_datasets(a) -> int:
    from cdm_core.data.registry import REGISTRY, availability
    width = max(map(len, REGISTRY))
    for name, entry in REGISTRY.items():
        ok, msg = availability(name)
        print(f"{name:<{width}}  {'yes' if ok else 'no ':<3}  {entry.kind:<5}  {entry.summary}"
              + ("" if ok else f"  ({msg})"))
    return 0


def register_sample(sub) -> None:
    s = sub.add_parser("sample", help="draw samples and write them with sources to an .npz")
    add_sampler_options(s)
    s.add_argument("--trajectory", action="store_true", help="keep every step's state")
    s.add_argument("--out", required=True, help="output .npz")
    s.set_defaults(func=cmd_sample)


def register_datasets(sub) -> None:
    sub.add_parser("datasets", help="list registered data sets and their availability").set_defaults(func=cmd_datasets)


def parse_ids(text: str) -> list[int]:
    try:
        ids = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CdmInputError(f"--ids must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise CdmInputError("--ids is empty")
    return ids


def cmd_sensitivity(a) -> int:
    from cdm_core.analysis.sensitivity import sensitivity
    from cdm_core.data.store import atomic_write_bytes, npz_bytes
    check_out(a.out, ".npz")
    if (a.top is None) == (a.ids is None):
        raise CdmInputError("give exactly one of --top K or --ids i,j,...")
    ids = parse_ids(a.ids) if a.ids is not None else None
    cfg = config_from_args(a)
    ds, weights = load_inputs(a)
    if ids is not None and (min(ids) < 0 or max(ids) >= ds.n):
        raise CdmInputError(f"--ids must lie in [0, {ds.n})")
    res = sensitivity(ds, cfg, ids=ids, top=a.top, weights=weights, callback=Progress("sensitivity"))
    meta = {"sampler": cfg.to_dict(), "dataset": res.dataset, "top": a.top, "ids": ids,
            "weights_given": weights is not None}
    if cfg.space == "latent":  # the autoencoder the maps went through (hash, reconstruction error)
        from cdm_core.latent.space import latent_space
        meta["autoencoder"] = latent_space(ds, cfg).describe()
    atomic_write_bytes(a.out, npz_bytes(res.arrays(), json.dumps(meta, sort_keys=True, default=str)))
    print(f"wrote {a.out}: jacobian {res.jacobian.shape}", file=sys.stderr)
    return 0


def register_sensitivity(sub) -> None:
    s = sub.add_parser("sensitivity", help="exact d samples / d log pi for chosen or most influential training points")
    add_sampler_options(s)
    s.add_argument("--top", type=int, help="the K most influential training points per sample (by |J|)")
    s.add_argument("--ids", help="comma-separated training ids")
    s.add_argument("--out", required=True, help="output .npz")
    s.set_defaults(func=cmd_sensitivity)


def cmd_sweep(a) -> int:
    from cdm_core.analysis.sweep import parse_floats, rows_to_csv, sweep
    from cdm_core.data.store import atomic_write_bytes
    check_out(a.out, ".csv")
    sigmas = parse_floats(a.sigmas, "--sigmas")
    draws = parse_floats(a.draws_list, "--draws-list") if a.draws_list else None
    if draws is not None and any(m != int(m) for m in draws):
        raise CdmInputError(f"--draws-list must be whole numbers, got {a.draws_list!r}")
    starts = parse_floats(a.starts, "--starts") if a.starts else None
    cfg = config_from_args(a)
    ds, weights = load_inputs(a)
    progress = Progress("sweep")
    rows = sweep(ds, cfg, sigmas, draws=draws, starts=starts, weights=weights, callback=progress, seeds=a.seeds)
    atomic_write_bytes(a.out, rows_to_csv(rows).encode())
    print(f"wrote {a.out}: {len(rows)} settings", file=sys.stderr)
    return 0


def register_sweep(sub) -> None:
    s = sub.add_parser("sweep", help="memorisation metrics against sigma (and optionally draws, start)")
    add_sampler_options(s)
    s.add_argument("--sigmas", required=True, help="comma-separated smoothing scales, e.g. 0,0.1,0.2")
    s.add_argument("--draws-list", help="comma-separated draws M to cross with the sigmas")
    s.add_argument("--starts", help="comma-separated start times T to cross with the sigmas")
    s.add_argument("--seeds", type=int, default=1,
                   help="independent sample sets per setting (seed, seed+1, ...): rows give means and *_sd columns")
    s.add_argument("--out", required=True, help="output .csv (one row per setting)")
    s.set_defaults(func=cmd_sweep)


def parse_sizes(text: str) -> list[int]:
    """--sizes: comma-separated whole numbers of training items."""
    from cdm_core.analysis.sweep import parse_floats
    sizes = parse_floats(text, "--sizes")
    if any(s != int(s) for s in sizes):
        raise CdmInputError(f"--sizes must be whole numbers, got {text!r}")
    return [int(s) for s in sizes]


def cmd_memorisation(a) -> int:
    from cdm_core.analysis.memorisation import emm, memorisation_curves, rows_to_csv
    from cdm_core.analysis.metrics import criterion_name
    from cdm_core.analysis.sweep import parse_floats
    from cdm_core.config import MODELS
    from cdm_core.data.store import atomic_write_bytes
    check_out(a.out, ".csv")
    sizes = parse_sizes(a.sizes)
    sigmas = parse_floats(a.sigmas, "--sigmas")
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise CdmInputError(f"--models must be among {', '.join(MODELS)}, got {a.models!r}")
    cfg = config_from_args(a)
    ds, _ = load_inputs(a)
    rows = memorisation_curves(ds, cfg, sizes, models, sigmas, seeds=a.seeds,
                               ratio=a.criterion_ratio, callback=Progress("memorisation"))
    atomic_write_bytes(a.out, rows_to_csv(rows).encode())
    levels = emm(rows)
    emm_path = a.out[:-4] + ".emm.csv"
    atomic_write_bytes(emm_path, rows_to_csv(levels, ("model", "sigma", "emm", "every_size")).encode())
    print(f"wrote {a.out} ({len(rows)} rows) and {emm_path}; criterion {criterion_name(a.criterion_ratio)}",
          file=sys.stderr)
    for e in levels:
        said = "below the smallest size" if e["emm"] is None else \
            f"at least {e['emm']:,} (memorised at every size tested)" if e["every_size"] else f"{e['emm']:,}"
        print(f"EMM (largest size memorised >= 90%): {e['model']} sigma {e['sigma']:g}: {said}", file=sys.stderr)
    return 0


def register_memorisation(sub) -> None:
    s = sub.add_parser("memorisation", help="memorised fraction (d1/d2 criterion) against training-set size")
    add_sampler_options(s)
    s.add_argument("--sizes", required=True, help="comma-separated training-set sizes (nested, class-balanced)")
    s.add_argument("--sigmas", default="0", help="comma-separated smoothing scales for model cfdm")
    s.add_argument("--models", default="cfdm", help="comma-separated models, e.g. cfdm,gaussian")
    s.add_argument("--seeds", type=int, default=1, help="sample sets per setting (seed, seed+1, ...), pooled")
    s.add_argument("--criterion-ratio", type=float, default=1 / 3,
                   help="memorised when d1/d2 is below this (1/3: Gu et al. 2025)")
    s.add_argument("--out", required=True, help="output .csv (one row per model, sigma and size; the EMM "
                   "per curve beside it as .emm.csv)")
    s.set_defaults(func=cmd_memorisation)


def cmd_split_half(a) -> int:
    from cdm_core.analysis.memorisation import rows_to_csv
    from cdm_core.analysis.split_half import COLUMNS, split_half
    from cdm_core.data.store import atomic_write_bytes
    check_out(a.out, ".csv")
    sizes = parse_sizes(a.sizes)
    cfg = config_from_args(a)
    ds, _ = load_inputs(a)
    rows = split_half(ds, cfg, sizes, callback=Progress("split-half"))
    atomic_write_bytes(a.out, rows_to_csv(rows, COLUMNS).encode())
    print(f"wrote {a.out}: {len(rows)} sizes; similarity "
          + ", ".join(f"{r['size']:,}: {r['similarity']:.3f}" for r in rows), file=sys.stderr)
    return 0


def register_split_half(sub) -> None:
    s = sub.add_parser("split-half", help="similarity of samples from models built on two disjoint halves")
    add_sampler_options(s)
    s.add_argument("--sizes", required=True, help="comma-separated items per half, e.g. 100,1000")
    s.add_argument("--out", required=True, help="output .csv (one row per size)")
    s.set_defaults(func=cmd_split_half)


def cmd_attribute(a) -> int:
    from cdm_core.analysis.attribution import attribute
    from cdm_core.data.files import load_file
    from cdm_core.data.store import atomic_write_bytes, npz_bytes
    check_out(a.out, ".npz")
    cfg = config_from_args(a)
    ds, _ = load_inputs(a)
    samples = load_file(a.samples).points
    noise = load_file(a.noise).points if a.noise else None
    att = attribute(ds, samples, cfg, noise=noise, k=a.blend_k, ratio=a.criterion_ratio,
                    callback=Progress("analytic model"))
    meta = {"sampler": cfg.to_dict() if noise is not None else None, "dataset": ds.describe(),
            "criterion": f"memorised: d1/d2 < {a.criterion_ratio:.4g} (Gu et al. 2025)", "blend_k": a.blend_k}
    atomic_write_bytes(a.out, npz_bytes(att.arrays(), json.dumps(meta, sort_keys=True, default=str)))
    said = f"{int(att.memorised.sum())} of {len(att.memorised)} memorised (d1/d2 < {a.criterion_ratio:.3g}); " \
           f"median blend residual {np.median(att.blend_residual):.3g}"
    if att.agreement_r is not None:
        said += f"; {cfg.model} from the same noise: median Pearson r {np.nanmedian(att.agreement_r):.3f}"
    print(f"wrote {a.out}: {said}", file=sys.stderr)
    return 0


def register_attribute(sub) -> None:
    s = sub.add_parser("attribute", help="nearest items, the criterion and the closest blend for samples of any model")
    add_sampler_options(s)
    s.add_argument("--samples", required=True,
                   help="the samples: .npy, .npz, .csv or a .zip of PNGs (the data set's shape)")
    s.add_argument("--noise", help="each sample's start noise (its state at t = 0), same formats: run --model from it")
    s.add_argument("--blend-k", type=int, default=64, help="nearest items the closest blend is fitted over")
    s.add_argument("--criterion-ratio", type=float, default=1 / 3,
                   help="memorised when d1/d2 is below this (1/3: Gu et al. 2025)")
    s.add_argument("--out", required=True, help="output .npz")
    s.set_defaults(func=cmd_attribute)


def cmd_figure(a) -> int:
    from pathlib import Path

    from cdm_core.report.export import export_bundle, read_manifest
    m = read_manifest(a.manifest)
    res = export_bundle(m, a.out, base_dir=Path(a.manifest).resolve().parent,
                        callback=lambda msg: print(f"figure: {msg}", file=sys.stderr))
    if res["message"]:
        print(f"note: {res['message']}", file=sys.stderr)
    print(f"wrote {len(res['files'])} files to {a.out}", file=sys.stderr)
    return 0


def register_figure(sub) -> None:
    s = sub.add_parser("figure", help="regenerate exported figures from a manifest.json alone")
    s.add_argument("--manifest", required=True, help="manifest.json from an export bundle")
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(func=cmd_figure)


def cmd_shard(a) -> int:
    from cdm_core.data.registry import load
    from cdm_core.data.shards import write_shards
    ds = load(a.data)
    m = write_shards(ds, a.shards, a.out, callback=lambda i, k: print(f"\rshard {i}/{k}", end="", file=sys.stderr))
    print(f"\nwrote {a.out}: {len(m.shards)} shards of {ds.name} ({m.n} x {m.dim}) and manifest.json; run them with "
          f"--data {a.out}/manifest.json --backend ray", file=sys.stderr)
    return 0


def register_shard(sub) -> None:
    s = sub.add_parser("shard", help="split a data set into K shard files plus a manifest (content hashes)")
    s.add_argument("--data", required=True, help="registered data set or a file")
    s.add_argument("--shards", type=int, required=True, help="number of shards K")
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(func=cmd_shard)


# Every sub-command, in the order `--help` lists them.
COMMANDS = (register_sample, register_datasets, register_sensitivity, register_sweep, register_memorisation,
            register_split_half, register_attribute, register_figure, register_shard)
