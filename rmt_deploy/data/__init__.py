"""Image loading and preprocessing."""
