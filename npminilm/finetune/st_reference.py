"""The sentence-transformers side of the fine-tuning checks (the step-parity tests, `benchmarks/fit_stsb.py`):
the same run trained with its loss classes, as its trainer trains them (torch AdamW over transformers' decay
groups, transformers' linear warm-up schedule, clipping at norm 1), on the same batches.

Optional by design: imported only by tests and benchmarks, with torch and sentence-transformers installed.
"""

import math

import numpy as np

from .fit import batch_order, decays, training_data


def train_sentence_transformers(folder, train, config, dtype="float32", log_every=1):
    """Train the folder's model with sentence-transformers on `train` (`data.Examples`) under `config`
    (`fit.FitConfig`; dropout as config.dropout, then with torch's generator seeded by config.seed).
    Returns (the SentenceTransformer, the mean loss of every `log_every` steps)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(config.seed)
    model = SentenceTransformer(str(folder), device="cpu")
    if dtype == "float64":
        model = model.double()
    model.train(config.dropout)
    if config.matryoshka_dims:
        raise NotImplementedError("the reference trains the plain losses")
    loss_fn = {"cosent": lambda: losses.CoSENTLoss(model, scale=config.scale),
               "cosine": lambda: losses.CosineSimilarityLoss(model),
               "mnrl": lambda: losses.MultipleNegativesRankingLoss(model, scale=config.scale),
               "mnrl-symmetric": lambda: losses.MultipleNegativesSymmetricRankingLoss(model, scale=config.scale),
               }[config.loss]()
    named = [(n, p) for n, p in model.named_parameters() if "pooler" not in n]
    groups = [{"params": [p for n, p in named if decays(n)], "weight_decay": config.weight_decay},
              {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
    examples, scores = training_data(train, config)
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total = config.max_steps or config.epochs * steps_per_epoch
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total), total)
    history, window = [], []
    for step in range(total):
        epoch, k = divmod(step, steps_per_epoch)
        idx = batch_order(len(examples), config.batch_size, config.seed, epoch)[k]
        batch = examples.take(idx)
        features = [model.preprocess(column) for column in batch.columns]
        labels = None if scores is None else torch.tensor(scores[idx], dtype=getattr(torch, dtype))
        loss = loss_fn(features, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        window.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == total:
            history.append(float(np.mean(window)))
            window.clear()
    return model.eval(), history


def parameters(model):
    """The transformer's parameters as {HF name: array}, as npminilm names them (without the module prefix:
    "0.model." in sentence-transformers 5, "0.auto_model." before)."""
    out = {}
    for name, p in model.named_parameters():
        for prefix in ("0.model.", "0.auto_model."):
            if name.startswith(prefix):
                out[name[len(prefix):]] = p.detach().numpy()
    return out
