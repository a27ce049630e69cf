"""Capture: run an engine (this project's or the transformers reference) and save named stages."""
