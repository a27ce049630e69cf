"""Compare captures: per-stage metrics, diff, bisection."""
