"""RMT reference model, variants and checkpoint loading."""
