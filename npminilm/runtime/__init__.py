"""How work runs: batches side by side on worker threads with BLAS pinned, and progress bars."""
