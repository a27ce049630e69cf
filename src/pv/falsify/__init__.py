"""Falsify: bind pytest tests to falsifier ids, record evidence, promote statuses.

The library's entry point is ``pv.falsify_contracts`` (``falsify.campaign``); this
package is only the package.
"""
