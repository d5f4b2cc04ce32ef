"""Benchmarks as a product: grids, paper presets, tuning and reports."""
