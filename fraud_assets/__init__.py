"""The Dagster code location: the fraudscale asset graph."""
