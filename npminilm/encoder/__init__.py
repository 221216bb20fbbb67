"""The sentence encoder: BERT forward and backward, pooling, model folders and weights, SentenceEncoder, trace."""
