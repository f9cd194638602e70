"""Benchmarks and load tests; never part of the pass/fail suite."""
