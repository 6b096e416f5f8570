"""Small helpers shared across medm3 (atomic file writes, hashing)."""
