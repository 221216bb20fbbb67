"""BLAS's row classes, checked on GEMMs of different rows (the probe uses equal ones)."""

import numpy as np
from hypothesis import given, settings, strategies as st

from npminilm.runtime.blas_rows import PERIODS, row_classes
from npminilm.runtime.parallel import worker_pool

SHAPES = ((48, 40), (40, 96))


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31), dtype=st.sampled_from([np.float32, np.float64]))
def test_a_row_gets_the_same_bits_at_every_position_of_its_class(seed, dtype):
    rng = np.random.default_rng(seed)
    with worker_pool(1, pin_blas=True):
        classes = row_classes(np.dtype(dtype), SHAPES)
        period = len(classes)
        assert period in PERIODS and classes[0] == 0
        for n_in, n_out in SHAPES:
            weight = rng.standard_normal((n_out, n_in)).astype(dtype)
            row = rng.standard_normal(n_in).astype(dtype)
            k = classes[seed % period]
            slots = [i for i, c in enumerate(classes) if c == k]
            results = []
            for periods in (1, 3, 7):
                x = rng.standard_normal((periods * period, n_in)).astype(dtype)  # the other rows: fresh numbers
                at = int(rng.integers(0, periods)) * period + int(rng.choice(slots))
                x[at] = row
                results.append((x @ weight.T)[at])
            assert all(np.array_equal(r, results[0]) for r in results), f"class {k} of {classes} does not hold"
