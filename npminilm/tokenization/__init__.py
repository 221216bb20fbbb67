"""Text to ids for the encoder: the BERT WordPiece tokenizer, equal to the HF fast one."""
