from __future__ import annotations

from typing import Any

from django.http import HttpRequest

NAV = [
    ("portal:dashboard", "Dashboard", "portal"),
    ("kdp:index", "KDP", "kdp"),
    ("guard:index", "Knox Guard", "guard"),
    ("efota:index", "E-FOTA", "efota"),
    ("portal:jobs", "Jobs", "jobs"),
    ("portal:audit", "Audit", "audit"),
    ("portal:accounts", "Accounts", "accounts"),
]


def portal(request: HttpRequest) -> dict[str, Any]:
    match = getattr(request, "resolver_match", None)
    section = getattr(match, "app_name", "") if match else ""
    if section == "portal" and match is not None:
        name = match.url_name or ""
        section = (
            "jobs"
            if name.startswith("job")
            else "audit"
            if name.startswith("audit")
            else ("accounts" if name.startswith("account") else "portal")
        )
    return {"nav": NAV, "nav_section": section}
