"""The training objective over a batch's embedding columns: one of sentence-transformers' losses, optionally
wrapped in Matryoshka, returning the loss and its gradient for each column."""

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgumentError
from ..nn.losses import (
    cosent_backward,
    cosent_forward,
    cosine_mse_backward,
    cosine_mse_forward,
    matryoshka_backward,
    matryoshka_forward,
    mnrl_backward,
    mnrl_forward,
)

LOSSES = {  # name: (sentence-transformers class, needs scores)
    "mnrl": ("MultipleNegativesRankingLoss", False),
    "mnrl-symmetric": ("MultipleNegativesSymmetricRankingLoss", False),
    "cosent": ("CoSENTLoss", True),
    "cosine": ("CosineSimilarityLoss", True),
}


@dataclass(frozen=True)
class Objective:
    loss: str = "cosent"
    scale: float = 20.0  # MNRL's and CoSENT's inverse temperature
    matryoshka_dims: tuple = ()
    matryoshka_weights: tuple | None = None

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise InvalidArgumentError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.matryoshka_weights is not None and len(self.matryoshka_weights) != len(self.matryoshka_dims):
            raise InvalidArgumentError(f"{len(self.matryoshka_dims)} Matryoshka dims but "
                                       f"{len(self.matryoshka_weights)} weights")
        if any(type(d) is not int or d < 1 for d in self.matryoshka_dims):
            raise InvalidArgumentError(f"Matryoshka dims must be positive integers, got {self.matryoshka_dims}")

    @property
    def needs_scores(self):
        return LOSSES[self.loss][1]

    def describe(self):
        name = LOSSES[self.loss][0]
        if self.matryoshka_dims:
            return f"MatryoshkaLoss({name}, dims={list(self.matryoshka_dims)})"
        return name

    def __call__(self, embeddings, scores=None):
        """embeddings: the batch's columns, each (B, dim); scores (B,) for the scored losses (cosine: in [0, 1]).
        Returns (loss as a float, [dloss / dcolumn for each column])."""
        if self.loss in ("mnrl", "mnrl-symmetric"):
            inputs = [embeddings[0], np.concatenate(embeddings[1:])]  # anchors, then positives and negatives
            forward, backward = mnrl_forward, mnrl_backward
            kwargs = {"scale": self.scale, "symmetric": self.loss == "mnrl-symmetric"}
        else:
            if len(embeddings) != 2 or scores is None:
                raise InvalidArgumentError(f"{self.describe()} takes scored pairs")
            inputs = list(embeddings)
            forward, backward = (cosent_forward, cosent_backward) if self.loss == "cosent" else \
                (cosine_mse_forward, cosine_mse_backward)
            kwargs = {"labels": scores, **({"scale": self.scale} if self.loss == "cosent" else {})}
        one = np.asarray(1.0, embeddings[0].dtype)
        if self.matryoshka_dims:
            loss, cache = matryoshka_forward(forward, inputs, self.matryoshka_dims, self.matryoshka_weights, **kwargs)
            grads = matryoshka_backward(backward, one, cache)
        else:
            loss, cache = forward(*inputs, **kwargs)
            grads = backward(one, cache)
        if self.loss in ("mnrl", "mnrl-symmetric"):  # the candidates' gradient back into their columns
            B = embeddings[1].shape[0]
            grads = [grads[0]] + [grads[1][i * B:(i + 1) * B] for i in range(len(embeddings) - 1)]
        return float(loss), list(grads)
