"""Knox Guard values, documented or assumed (knox-api.md §4, §6), shared by name and value with the sandbox."""

from __future__ import annotations

# Seed 003: at most 100 calls per second per IP, user or API token; 429 above it.
KG_MAX_REQUESTS_PER_SECOND = 100
