"""Benchmarks (placeholder until the stream benchmark lands)."""
