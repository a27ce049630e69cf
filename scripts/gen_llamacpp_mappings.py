"""Rewrite src/pv/mappings/llama.cpp*.yaml from the live capture's node tables.

    python scripts/gen_llamacpp_mappings.py
"""

from __future__ import annotations

from pv.capture.llamacpp_mapping import write
from pv.capture.mapping import SHIPPED_DIR

if __name__ == "__main__":
    for path in write(SHIPPED_DIR):
        print(path)
