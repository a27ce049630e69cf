"""Rewrite src/pv/mappings/llama.cpp*.yaml from the live capture's node tables.

    python scripts/gen_llamacpp_mappings.py
"""

from __future__ import annotations

from pv.capture.importer.mapping import SHIPPED_DIR
from pv.capture.llamacpp.mappings import write

if __name__ == "__main__":
    for path in write(SHIPPED_DIR):
        print(path)
