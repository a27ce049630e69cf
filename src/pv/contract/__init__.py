"""Contracts: load YAML claims, check them against the schema and the semantic rules."""
