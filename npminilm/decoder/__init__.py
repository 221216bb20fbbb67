"""The GPT-2-style decoder: model, tokenizers, training, checkpoints, sampling, export to transformers."""
