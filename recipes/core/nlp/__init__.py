"""The language recipes' parts: the BERT-style tokenizer and masked windows, the
character vocabulary and losses, and generation with a KV cache.
"""
