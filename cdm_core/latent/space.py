"""A latent space: a data set's training images through its autoencoder.

The sampler runs unchanged on the training latents z_k = E(x_k) (float32 encoder outputs, used
as float64 from there on), so every guarantee of the engine holds in latent space: sources and
their weights reproduce each latent sample exactly. Samples are shown and saved decoded,
x = Dec(z), in the data's own units and shape; the decoder runs in float64 so decoding and its
Jacobian (pixel-space sensitivity, Dec'(z) dz/dlog pi) are as precise as the latent numbers.

Weights come from, in order: a user's safetensors file (`ae_weights`), the cache (keyed by the
data's content hash and the architecture's settings), or training, which then fills the cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cdm_core import settings
from cdm_core.data.dataset import Dataset
from cdm_core.data.store import atomic_write_bytes
from cdm_core.errors import CdmInputError
from cdm_core.latent.autoencoder import ARCHITECTURE, AutoencoderSpec, ConvAutoencoder, build, steps_for, train

log = logging.getLogger(__name__)

F64 = torch.float64
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_HEADER_BYTES = 100 * 2**20  # as safetensors itself allows
_CACHE: OrderedDict = OrderedDict()  # in-process: key -> LatentSpace (a few, newest last)
_CACHE_SIZE = 4
_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class LatentSpace:
    data: Dataset  # the training set in data units
    model: ConvAutoencoder  # float32, eval mode: defines the latents
    latents: np.ndarray  # (N, K) float32: E(x_k), the sampler's training points
    weights_hash: str  # sha256 (16 hex) of the weights' names, shapes and bytes
    origin: str  # "trained", "cache" or "file <name>"
    recon_rmse: float  # root mean squared error of Dec(E(x)) on the training set, data units
    relative_error: float  # mean squared reconstruction error / pixel variance

    @property
    def latent_dim(self) -> int:
        return int(self.latents.shape[1])

    @functools.cached_property
    def dataset(self) -> Dataset:
        """The training latents as a data set (what the engine samples from)."""
        d = self.data
        return Dataset(name=f"{d.name} (latent)", points=self.latents, labels=d.labels, label_names=d.label_names,
                       scaling=f"autoencoder latents, K = {self.latent_dim}, unit RMS per coordinate",
                       source=f"{d.source}; encoded by autoencoder {self.weights_hash}", licence=d.licence,
                       params={"space": "latent", "autoencoder": self.weights_hash, "data_hash": d.content_hash})

    @functools.cached_property
    def _model64(self) -> ConvAutoencoder:
        m = build(self.model.image_shape, self.model.spec)
        m.load_state_dict(self.model.state_dict())
        return m.to(F64).eval()

    def describe(self) -> dict:
        return {"space": "latent", "latent_dim": self.latent_dim, "autoencoder_hash": self.weights_hash,
                "reconstruction_rmse": self.recon_rmse, "relative_error": self.relative_error,
                "origin": self.origin, "architecture": self.model.spec.to_dict()}

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """(n, D) data-unit rows -> (n, K) float64 latents (the float32 encoder, as for training)."""
        return encode_rows(self.model, rows).astype(np.float64)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """(n, K) latents -> (n, D) float64 rows in data units."""
        with torch.no_grad():
            out = self._model64.decode(torch.as_tensor(np.asarray(z, np.float64).reshape(-1, self.latent_dim)))
        return out.numpy()

    def decoder_jacobian(self, z: np.ndarray) -> np.ndarray:
        """(n, D, K) float64: d Dec / d z at each latent, by forward mode (K Jacobian-vector
        products per latent, `torch.func.jacfwd`)."""
        from torch.func import jacfwd, vmap
        m = self._model64
        zt = torch.as_tensor(np.asarray(z, np.float64).reshape(-1, self.latent_dim))
        return vmap(jacfwd(lambda v: m.decode(v[None])[0]))(zt).detach().numpy()

    def encoder_jvp(self, row: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """d E(x) / dx . v at one data-unit row (float64 copy of the encoder): how a training
        point's latent moves when the image moves along v."""
        from torch.func import jvp
        m = self._model64
        x = torch.as_tensor(np.asarray(row, np.float64)[None])
        v = torch.as_tensor(np.asarray(direction, np.float64)[None])
        return jvp(m.encode, (x,), (v,))[1][0].detach().numpy()


def encode_rows(model: ConvAutoencoder, rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
    x = torch.as_tensor(np.array(rows, dtype=np.float32))  # a copy: the rows may be a read-only memory map
    with torch.no_grad():
        return torch.cat([model.encode(x[i:i + chunk]) for i in range(0, max(len(x), 1), chunk)]).numpy()


def weights_hash(state: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().contiguous().cpu()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _reconstruction(model: ConvAutoencoder, data: Dataset, latents: np.ndarray) -> tuple[float, float]:
    sq, x = 0.0, data.points
    with torch.no_grad():
        for i in range(0, data.n, 4096):
            rec = model.decode(torch.as_tensor(latents[i:i + 4096])).numpy().astype(np.float64)
            sq += float(((rec - x[i:i + 4096]) ** 2).sum())
    mse = sq / max(x.size, 1)
    var = float(np.var(x, dtype=np.float64))
    return float(np.sqrt(mse)), float(mse / var) if var > 0 else 0.0


# ------------------------------------------------------------------ weights files


def _header(raw: bytes, name: str) -> dict:
    """The JSON header of a safetensors file (its metadata lives under "__metadata__")."""
    if len(raw) < 8:
        raise CdmInputError(f"{name}: not a safetensors file (too short)")
    size = int.from_bytes(raw[:8], "little")
    if size > len(raw) - 8:
        raise CdmInputError(f"{name}: not a safetensors file (header length {size} exceeds the file)")
    if size > MAX_HEADER_BYTES:
        raise CdmInputError(f"{name}: not a safetensors file (header of {size} bytes, over {MAX_HEADER_BYTES})")
    try:
        header = json.loads(raw[8:8 + size])
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        raise CdmInputError(f"{name}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise CdmInputError(f"{name}: not a safetensors file (header is not a table)")
    return header


def read_weights(raw: bytes, name: str) -> tuple[dict, dict]:
    """Tensors and metadata of a safetensors file's bytes (never a pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load
    meta = _header(raw, name).get("__metadata__") or {}
    try:
        tensors = load(raw)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CdmInputError(f"{name}: corrupt safetensors file ({str(e).splitlines()[0][:120]})") from None
    return tensors, meta


def model_from_weights(tensors: dict, data: Dataset, spec: AutoencoderSpec, name: str) -> ConvAutoencoder:
    """The built-in architecture for `data` loaded with `tensors`; a file for another architecture,
    image size or latent size is refused in one line."""
    model = build(data.image_shape, spec)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    for key, v in tensors.items():  # before anything reads shapes or values
        if v.dtype not in FLOAT_DTYPES:
            raise CdmInputError(f"{name}: {key} is {str(v.dtype).replace('torch.', '')}, not a float16/32/64 or "
                                "bfloat16 tensor")
    shape_in = got.get("decoder_in.0.weight", (0, spec.latent_dim))
    k = shape_in[-1] if len(shape_in) == 2 else None
    if k is not None and k != spec.latent_dim and set(got) == set(want):
        raise CdmInputError(f"{name}: the weights have {k} latent dimensions, not {spec.latent_dim}: "
                            f"set latent_dim to {k}")
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise CdmInputError(f"{name}: not weights of the built-in autoencoder ({what})")
    for k, shape in want.items():
        if got[k] != shape:
            raise CdmInputError(f"{name}: {k} has shape {got[k]}, the built-in autoencoder for "
                                f"{data.name} ({'x'.join(map(str, data.image_shape))}) needs {shape}")
    for k, v in tensors.items():
        if not torch.isfinite(v).all():
            raise CdmInputError(f"{name}: {k} holds non-finite values")
    model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    if float(model.pixel_std) <= 0 or float(model.latent_scale) <= 0:
        raise CdmInputError(f"{name}: pixel_std and latent_scale must be positive")
    if not float(model.pixel_max) > float(model.pixel_min):
        raise CdmInputError(f"{name}: pixel_max must be above pixel_min (the decoder's output range)")
    return model.eval()


def weights_bytes(model: ConvAutoencoder, data: Dataset) -> bytes:
    from safetensors.torch import save
    meta = {"format": ARCHITECTURE, "spec": json.dumps(model.spec.to_dict(), sort_keys=True),
            "data_hash": data.content_hash, "image_shape": json.dumps(list(data.image_shape))}
    return save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata=meta)


def cache_path(data: Dataset, spec: AutoencoderSpec) -> Path:
    return settings.cache_dir() / "autoencoders" / f"{data.content_hash}-{spec.key}.safetensors"


# ------------------------------------------------------------------ opening a space


def check_image_data(data) -> Dataset:
    if not isinstance(data, Dataset) or data.image_shape is None:
        name = getattr(data, "name", "these data")
        raise CdmInputError(f"latent space needs an image data set; {name} is point data (use space data)")
    return data


def is_ready(data, config) -> bool:
    """Whether `latent_space` would answer without training (weights in memory, on disk or given)."""
    if config.ae_weights:
        return True
    spec = AutoencoderSpec(latent_dim=config.latent_dim)
    with _LOCK:
        if any(k[:2] == (data.content_hash, spec.key) for k in _CACHE):
            return True
    return cache_path(data, spec).exists()


def latent_space(data, config, callback=None) -> LatentSpace:
    """The latent space for `data` under `config` (latent_dim, ae_weights). `callback(info)` gets
    training progress as {"stage", "step", "steps", "batch", "batches"}."""
    data = check_image_data(data)
    spec = AutoencoderSpec(latent_dim=config.latent_dim)
    source = config.ae_weights
    stamp = None
    if source:
        p = Path(source)
        try:
            st = p.stat()
        except OSError as e:
            raise CdmInputError(f"{source}: cannot read autoencoder weights ({e.strerror})") from None
        stamp = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    key = (data.content_hash, spec.key, stamp)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    space = _open(data, spec, source, callback)
    with _LOCK:
        _CACHE[key] = space
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return space


def _open(data: Dataset, spec: AutoencoderSpec, source: str, callback) -> LatentSpace:
    if source:
        raw = _read_limited(Path(source))
        tensors, _ = read_weights(raw, Path(source).name)
        model, origin = model_from_weights(tensors, data, spec, Path(source).name), f"file {Path(source).name}"
    else:
        model, origin = _cached_model(data, spec), "cache"
        if model is None:
            model, origin = _train(data, spec, callback), "trained"
    latents = encode_rows(model, data.points)
    if not np.all(np.isfinite(latents)):
        raise CdmInputError("the autoencoder gives non-finite latents on this data set")
    rmse, rel = _reconstruction(model, data, latents)
    return LatentSpace(data, model, latents, weights_hash(model.state_dict()), origin, rmse, rel)


def _read_limited(path: Path) -> bytes:
    lim = settings.limits().max_file_bytes
    try:
        size = path.stat().st_size
        if size > lim:
            raise CdmInputError(f"{path.name}: {size / 2**20:.0f} MiB is over the {lim / 2**20:.0f} MiB limit "
                                "(CDM_MAX_FILE_MB)")
        return path.read_bytes()
    except OSError as e:
        raise CdmInputError(f"{path}: cannot read autoencoder weights ({e.strerror})") from None


def _cached_model(data: Dataset, spec: AutoencoderSpec) -> ConvAutoencoder | None:
    path = cache_path(data, spec)
    if not path.exists():
        return None
    try:
        tensors, meta = read_weights(path.read_bytes(), path.name)
        if meta.get("format") != ARCHITECTURE or meta.get("data_hash") != data.content_hash:
            return None
        return model_from_weights(tensors, data, spec, path.name)
    except (CdmInputError, OSError) as e:  # a damaged cache entry is retrained, not trusted
        log.warning("ignoring cached autoencoder %s: %s", path, e)
        return None


def _train(data: Dataset, spec: AutoencoderSpec, callback) -> ConvAutoencoder:
    steps = spec.train_steps or steps_for(data.n)
    log.info("training the autoencoder for %s (%d steps)", data.name, steps)

    def report(k, n, loss):
        if callback is not None:
            callback({"stage": "training autoencoder", "step": k, "steps": n, "batch": 1, "batches": 1,
                      "loss": loss})

    model = train(data.points, data.image_shape, spec, report)
    try:
        atomic_write_bytes(cache_path(data, spec), weights_bytes(model, data))
    except OSError as e:  # a read-only cache costs a retrain next time, nothing else
        log.warning("could not cache the autoencoder: %s", e)
    return model
