"""The synthetic model's seed, where ``pv.falsify.facts`` reads it until it imports ``pv.capture.model.synthetic``."""

from pv.capture.model.synthetic import SEED

__all__ = ["SEED"]
