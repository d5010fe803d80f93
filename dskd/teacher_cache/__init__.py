"""Teacher cache: the teacher's top-k logits and hidden states, precomputed once for cached training."""
