"""Training data: sources, QA prompts, token-to-synset alignment, sense sampling, streaming DataModule."""
