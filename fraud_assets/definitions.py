"""Entry point of the code location (workspace.yaml loads `defs` from here)."""

import dagster as dg

defs = dg.Definitions()
