"""pv's own engine: a straight-line PyTorch forward with a capture point after each step,
its attention, KV cache, shared blocks and weights.
"""
