"""`npminilm serve`: an OpenAI-compatible embedding server (the `serve` extra: Starlette, uvicorn,
prometheus_client).

- `config`: the server's settings and their limits.
- `schema`: each endpoint's JSON body, read and checked into plain values (a RequestError names the field at fault).
- `batcher`: dynamic batching: the texts of requests that arrive together are embedded in one batch, cut by a
  token budget, on a worker thread while the event loop keeps accepting.
- `metrics`: the Prometheus counters, gauges and histograms of /metrics.
- `app`: the Starlette application: routes, API key, error bodies.
- `server`: loads the model, binds the socket and runs uvicorn, which drains in-flight requests on SIGTERM.
"""
