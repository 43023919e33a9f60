"""CLI sub-commands that live beside their modules (kept out of cli.py so the sampler's CLI
stays small). Importing this module registers them."""

from __future__ import annotations

import json
import sys

from .cli import EXTRA_COMMANDS, Progress, add_sampler_options, check_out, config_from_args, load_inputs
from .errors import CdmInputError


def parse_ids(text: str) -> list[int]:
    try:
        ids = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CdmInputError(f"--ids must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise CdmInputError("--ids is empty")
    return ids


def cmd_sensitivity(a) -> int:
    from .export_io import atomic_write_bytes, npz_bytes
    from .sensitivity import sensitivity
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


EXTRA_COMMANDS.append(register_sensitivity)


def cmd_sweep(a) -> int:
    from .export_io import atomic_write_bytes
    from .sweep import parse_floats, rows_to_csv, sweep
    check_out(a.out, ".csv")
    sigmas = parse_floats(a.sigmas, "--sigmas")
    draws = parse_floats(a.draws_list, "--draws-list") if a.draws_list else None
    if draws is not None and any(m != int(m) for m in draws):
        raise CdmInputError(f"--draws-list must be whole numbers, got {a.draws_list!r}")
    starts = parse_floats(a.starts, "--starts") if a.starts else None
    cfg = config_from_args(a)
    ds, weights = load_inputs(a)
    progress = Progress("sweep")
    rows = sweep(ds, cfg, sigmas, draws=draws, starts=starts, weights=weights, callback=progress)
    atomic_write_bytes(a.out, rows_to_csv(rows).encode())
    print(f"wrote {a.out}: {len(rows)} settings", file=sys.stderr)
    return 0


def register_sweep(sub) -> None:
    s = sub.add_parser("sweep", help="memorisation metrics against sigma (and optionally draws, start)")
    add_sampler_options(s)
    s.add_argument("--sigmas", required=True, help="comma-separated smoothing scales, e.g. 0,0.1,0.2")
    s.add_argument("--draws-list", help="comma-separated draws M to cross with the sigmas")
    s.add_argument("--starts", help="comma-separated start times T to cross with the sigmas")
    s.add_argument("--out", required=True, help="output .csv (one row per setting)")
    s.set_defaults(func=cmd_sweep)


EXTRA_COMMANDS.append(register_sweep)


def cmd_figure(a) -> int:
    from pathlib import Path

    from .export import export_bundle, read_manifest
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


EXTRA_COMMANDS.append(register_figure)
