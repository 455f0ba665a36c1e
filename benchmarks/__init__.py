"""Reproducible performance runs, one script each; results go to benchmarks/results/ as JSON."""
