"""The thin layer above the engine: files, caches, Ray's lifecycle and the latent space's
encode/decode. The CLI, the report and the dashboard call it; the engine (cdm_core.engine) stays
arrays in, arrays out.

- `prepared`: prepared training sets, cached per data set, device and index; checked against
  the request when a caller hands one in.
- `shards`: shard files, the Ray session and the shard actors.
- `run`: `sample` (what `cdm_core.sample` is), from a data set and a configuration to a result,
  in data or latent space.
"""
