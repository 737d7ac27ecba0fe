"""Data tools: the transaction simulator, the landing-folder reader, the `fraudscale` command."""
