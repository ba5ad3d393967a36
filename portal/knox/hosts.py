"""Regional base URLs (knox-api.md §1).

A service's base URL is what its documented paths are appended to:
- `kdp`: ends in /kcs/v1/rp (paths like /devices/upload)
- `guard`: ends in /kcs/v1.1/kg (or /integration on Samsung's development server; paths like /devices/lock)
- `kdp_gen1`, `efota`, `auth`: the host root (paths like /bulkenroll/v1/..., /b2bfota/v2/..., /ams/v1/...)
"""

from __future__ import annotations

from django.conf import settings

SERVICES = ("kdp", "kdp_gen1", "guard", "efota", "auth")
SERVICE_LABELS = {
    "kdp": "KDP Gen2",
    "kdp_gen1": "KDP Gen1",
    "guard": "Knox Guard",
    "efota": "E-FOTA",
    "auth": "Knox authentication",
}
# KnoxAccount field holding the free override of each service's base URL.
OVERRIDE_FIELDS = {
    "kdp": "kdp_url",
    "kdp_gen1": "kdp_gen1_url",
    "guard": "guard_url",
    "efota": "efota_url",
    "auth": "auth_url",
}

# Path prefixes on a host root, used where one base URL serves every service (the sandbox).
SERVICE_PREFIXES = {"kdp": "/kcs/v1/rp", "guard": "/kcs/v1.1/kg", "kdp_gen1": "", "efota": "", "auth": ""}

# OAuth 2.0 client credentials are issued by one global host whatever the region (knox-api.md §2.3).
OAUTH_HOST = "https://api.samsungknox.com"


def _regional(region: str, environment: str) -> dict[str, str]:
    kcs = f"https://{region}-kcs-api.samsungknox.com"
    return {
        "kdp": f"{kcs}/kcs/v1/rp",
        "kdp_gen1": f"https://{region}-be-reseller.samsungknox.com",
        # Samsung's Knox Guard development server lives under /integration (seed 003; knox-api.md §6 q16).
        "guard": f"{kcs}/integration" if environment == "integration" else f"{kcs}/kcs/v1.1/kg",
        # Only the EU E-FOTA host is documented (knox-api.md §6 q23); US accounts override it if theirs differs.
        "efota": "https://eu-api.samsungknox.com",
        "auth": kcs,
    }


def preset(environment: str, region: str, service: str, *, auth_mode: str = "knox_token") -> str:
    """The default base URL of `service` for an account in this environment and region."""
    if service not in SERVICES:
        raise ValueError(f"unknown Knox service {service!r}")
    if environment == "sandbox":
        return settings.KNOX_SANDBOX_URL + SERVICE_PREFIXES[service]
    if auth_mode == "oauth" and service in ("auth", "kdp"):
        # OAuth tokens come from, and KDP Gen2 with OAuth is served by, the global host (knox-api.md §1, §2.3).
        return OAUTH_HOST + SERVICE_PREFIXES[service]
    return _regional(region, environment)[service]
