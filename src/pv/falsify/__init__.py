"""Falsify: bind pytest tests to falsifier ids, record evidence, promote statuses."""
