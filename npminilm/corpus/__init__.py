"""Corpora of any size on one machine: `npminilm encode --input FILE --output FILE`.

- `readers`: a .txt (a text a line), .jsonl or .parquet corpus streamed as (id, text) rows, bad rows named by
  file and row (or skipped and counted).
- `job`: the rows embedded in chunks with bounded memory, each finished chunk kept in `<output>.parts/` so that
  `resume` skips it, then put together into the .npy or .parquet output atomically.
"""
