"""Gaussian-splat scene memory: online mapping from RGB-D, rendering, objects, queries."""
