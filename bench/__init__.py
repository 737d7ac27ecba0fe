"""Benchmarks that run fraudscale and a peer side by side on the same data."""
