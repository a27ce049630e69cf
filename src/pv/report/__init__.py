"""Report: status tables and the CI gate."""
