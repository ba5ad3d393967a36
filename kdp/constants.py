"""KDP values Samsung does not document: one named constant each, with the same name and value as in the
sandbox (knox-api.md §6). tests/test_shared_constants.py keeps the two in step."""

from __future__ import annotations

# §6 q11: no published KDP rate limit; Knox Configure documents 10 requests/s per token.
KDP_MAX_REQUESTS_PER_SECOND = 10
