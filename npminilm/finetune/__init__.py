"""Fine-tuning sentence embeddings: training data, losses over embedding columns, the loop, evaluation and the
sentence-transformers folder it writes. It works on any model with SentenceEncoder's training interface
(`tokenize`, `forward_train`, `backward`, `encode`, `params`), which `SentenceEncoder.fit` passes in."""
