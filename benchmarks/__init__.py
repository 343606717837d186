"""Benchmarks (run by hand, never as tests): ``python -m benchmarks``."""
