"""Corpora of any size: `npminilm encode --input FILE --output FILE` on one machine or (`--ray`) a Ray cluster.

- `readers`: a .txt (a text a line), .jsonl or .parquet corpus streamed as (id, text) rows, bad rows named by
  file and row (or skipped and counted).
- `job`: the rows embedded in chunks with bounded memory, each finished chunk kept in `<output>.parts/` so that
  `resume` skips it, then put together into the .npy or .parquet output atomically.
- `ray_data`: the Ray side (the `ray` extra): `Embedder`, a callable class for Ray Data's `map_batches`, one
  model per actor; `embed_dataset`; `RayEncoder`, the actor pool the `--ray` command sends each chunk to.
"""
