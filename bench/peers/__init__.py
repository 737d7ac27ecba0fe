"""The peers the benchmarks run against, written the way their users would write them."""
