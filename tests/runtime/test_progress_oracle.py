"""The progress bar uses tqdm when it is installed (it is in the oracle environment, not in the core one)."""

import io

import tqdm

from npminilm.runtime import progress


def test_tqdm_is_used_when_present():
    stream = io.StringIO()
    assert list(progress.track(range(3), desc="Batches", show_progress_bar=True, stream=stream)) == [0, 1, 2]
    assert "3/3" in stream.getvalue() and "Batches" in stream.getvalue()
    assert progress._tqdm_class() is tqdm.tqdm  # the bar above came from tqdm, not the plain fallback
