"""llama.cpp as a captured runner: its graph nodes read through ``cb_eval``, the ggml tensor
layout, the per-architecture node tables and the import mappings generated from them.
"""
