"""The NumPy base every model shares: ops and losses as forward/backward pairs, the optimiser, gradient checks.

Nothing here imports from the rest of npminilm but `npminilm.errors`.
"""
