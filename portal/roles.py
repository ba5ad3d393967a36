"""The three staff roles, as Django groups with permissions (created by migration portal 0002).

- viewer: reads every page.
- operator: also queues KDP uploads/deletes and Knox Guard / E-FOTA actions.
- admin: also manages Knox accounts and credentials, staff users, and may lock/unlock/complete/delete Knox Guard
  devices.
Knox Guard lock/unlock/complete/delete need `portal.control_guard_devices` on top of `queue_jobs` because they
act on end users' phones: give it to individual operators in the admin (Users → user → permissions).

Who may grant what (enforced by portal/admin.py through `Authority`): a superuser anything; anyone else only what
it holds itself. See `Authority`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Q

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


def held_permission_ids(user: Any) -> set[int]:
    """The ids of the permissions `user` holds, directly or through its groups, active or not (an inactive user
    can be made active again, so what it holds still counts)."""
    from django.contrib.auth.models import Permission

    if user.pk is None:
        return set()
    held = Permission.objects.filter(Q(user=user) | Q(group__user=user)).values_list("pk", flat=True).distinct()
    return set(held)


def permission_labels(ids: Iterable[int]) -> list[str]:
    """ "app_label.codename" of each permission, sorted (what the audit log and error messages show)."""
    from django.contrib.auth.models import Permission

    rows = Permission.objects.filter(pk__in=list(ids)).values_list("content_type__app_label", "codename")
    return sorted(f"{app_label}.{codename}" for app_label, codename in rows)


@dataclass(frozen=True)
class Authority:
    """What a staff member may give or take away in the admin: nothing beyond what it holds itself.

    - A superuser: everything, including superuser and staff status (which only superusers change).
    - Anyone else: the permissions it holds (directly or through a group), and the groups whose every permission
      it holds; it may change, reset the password of, or delete only users who hold nothing it lacks (never a
      superuser), and edit only groups that carry nothing it lacks. Taking away follows the same rule as giving:
      what it could not grant, it cannot remove either.
    So an `admin` may put staff in viewer, operator or admin (it holds every permission of the three), but not in
    a group a superuser made with, say, `auth.delete_user`.
    """

    is_superuser: bool
    held: frozenset[int]

    @classmethod
    def of(cls, user: Any) -> Authority:
        if user.is_superuser:
            return cls(is_superuser=True, held=frozenset())
        return cls(is_superuser=False, held=frozenset(held_permission_ids(user)))

    def lacking(self, permission_ids: Iterable[int]) -> set[int]:
        """Those of `permission_ids` this authority does not reach."""
        return set() if self.is_superuser else set(permission_ids) - self.held

    def may_manage_user(self, user: Any) -> bool:
        if self.is_superuser:
            return True
        return not user.is_superuser and not self.lacking(held_permission_ids(user))

    def may_manage_group(self, group: Any) -> bool:
        if self.is_superuser or group.pk is None:
            return True
        return not self.lacking(group.permissions.values_list("pk", flat=True))
