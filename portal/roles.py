"""The three staff roles, as Django groups with permissions (created by migration portal 0002).

- viewer: reads every page.
- operator: also queues KDP uploads/deletes and Knox Guard / E-FOTA actions.
- admin: also manages Knox accounts and credentials, staff users, and may lock/unlock/complete/delete Knox Guard
  devices.
Knox Guard lock/unlock/complete/delete need `portal.control_guard_devices` on top of `queue_jobs` because they
act on end users' phones: give it to individual operators in the admin (Users → user → permissions).
"""

from __future__ import annotations

from typing import Any

VIEWER = ["portal.access_portal"]
OPERATOR = [*VIEWER, "portal.queue_jobs"]
ADMIN = [
    *OPERATOR,
    "portal.control_guard_devices",
    "portal.manage_accounts",
    # Django admin pages for staff and records
    "auth.view_user",
    "auth.add_user",
    "auth.change_user",
    "auth.view_group",
    "portal.view_knoxaccount",
    "portal.add_knoxaccount",
    "portal.change_knoxaccount",
    "portal.view_job",
    "portal.view_auditevent",
    "portal.view_ratelimitslot",
]

ROLES: dict[str, list[str]] = {"viewer": VIEWER, "operator": OPERATOR, "admin": ADMIN}


def sync_roles(apps: Any) -> None:
    """Create the groups and give each exactly its permissions (missing permissions are created first)."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        objs = []
        for perm in perms:
            app_label, codename = perm.split(".")
            objs.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group.permissions.set(objs)
