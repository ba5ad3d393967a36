"""Audit of every change to users, groups and permissions, wherever it is made: the Django admin, a portal view,
`manage.py shell`, createsuperuser, changepassword, any management command.

Signal receivers on the auth models and their many-to-many tables (connected by `connect()`, from
portal/apps.py) turn each change into one AuditEvent:

- actions: user.create / user.change / user.delete, group.create / group.change / group.delete,
  permission.create / permission.change / permission.delete;
- summary: "changes" {field: [old, new]} for the username, names, e-mail and the flags (a group's name, a
  permission's codename and name); "groups_added" / "groups_removed" by name and "permissions_added" /
  "permissions_removed" as "app_label.codename"; "notes": ["password changed"] (or "password set", "password
  disabled"). Never a password or a hash: the hash is only compared, old with new.

Who: the signed-in user of the request being served (portal.middleware.AuditActorMiddleware opens `acting()`),
else "system" (shell, management commands).

One admin save fires a save signal and several m2m signals (groups, then permissions). Inside `batch()`, which the
admin opens around a save, they merge into one event per object, written in the same transaction as the change.
Outside a batch each signal writes its event at once.

Skipped on purpose: Django re-hashing a password at login (same password, new hash format), and saves that only
touch fields nobody audits (`last_login` on every sign-in).

Migrations: Django sends the signals of historical models (a data migration's `apps.get_model(...)`) with the
historical class as sender, which these receivers do not listen to; the migration file is the record of what it
did. A migration or post_migrate handler that uses the real models is audited when the audit table is ready, and
otherwise logged as a warning: during `migrate` the table may not exist yet, or lack a column a later migration
adds, and a failed INSERT would break the migration.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import get_hasher, identify_hasher
from django.contrib.auth.models import Group, Permission
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Model
from django.db.models.signals import (
    m2m_changed,
    post_delete,
    post_migrate,
    post_save,
    pre_delete,
    pre_migrate,
    pre_save,
)
from django.http import HttpRequest

from portal.models import AuditEvent

log = logging.getLogger(__name__)

USER_FIELDS = ("username", "first_name", "last_name", "email", "is_active", "is_staff", "is_superuser")
# The fields audited for each model (by label); the password of a user is compared apart.
FIELDS: dict[str, tuple[str, ...]] = {
    "auth.group": ("name",),
    "auth.permission": ("codename", "name"),
}
KIND = {"auth.group": "group", "auth.permission": "permission"}

# Attributes set on instances between a pre_ and a post_ signal.
_BEFORE = "_useraudit_before"
_REMOVING = "_useraudit_removing"
_DELETING = "_useraudit_deleting"
_UNAUDITED = object()  # pre_save found nothing audited in update_fields


# --- who, and one event per admin save --------------------------------------------------------------------------


@dataclass
class _Pending:
    action: str
    target: Model
    summary: dict[str, Any]
    using: str


@dataclass
class _Scope:
    request: HttpRequest | None
    pending: dict[tuple[str, Any], _Pending] | None = None  # None: each event is written at once


_scope: ContextVar[_Scope | None] = ContextVar("portal_useraudit_scope", default=None)


@contextmanager
def acting(request: HttpRequest) -> Iterator[None]:
    """Changes made inside are done by `request.user` (with the request's IP)."""
    token = _scope.set(_Scope(request=request))
    try:
        yield
    finally:
        _scope.reset(token)


@contextmanager
def batch(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """One event per changed object for everything done inside, written at the end in the same transaction (an
    exception rolls back the change and its events together)."""
    outer = _scope.get()
    request = outer.request if outer else None
    pending: dict[tuple[str, Any], _Pending] = {}
    with transaction.atomic(using=using):
        token = _scope.set(_Scope(request=request, pending=pending))
        try:
            yield
        finally:
            _scope.reset(token)
        for event in pending.values():
            _write(event.action, event.target, event.summary, request, event.using)


def _note(action: str, target: Model, summary: dict[str, Any], using: str) -> None:
    scope = _scope.get()
    if scope is None or scope.pending is None:
        _write(action, target, summary, scope.request if scope else None, using)
        return
    key = (target._meta.label_lower, target.pk)
    pending = scope.pending.get(key)
    if pending is None:
        scope.pending[key] = _Pending(action, target, summary, using)
    else:
        _merge(pending, action, target, summary)


def _merge(pending: _Pending, action: str, target: Model, summary: dict[str, Any]) -> None:
    if action.endswith(".delete"):  # what it was when deleted is what counts
        pending.action, pending.target, pending.summary = action, target, summary
        return
    if pending.action.endswith(".delete"):
        return
    merged = pending.summary
    changes = merged.setdefault("changes", {})
    for name, (old, new) in summary.get("changes", {}).items():
        first = changes.get(name, [old, new])[0]
        if first == new:  # changed and changed back
            changes.pop(name, None)
        else:
            changes[name] = [first, new]
    for kind in ("groups", "permissions"):
        # Added then removed (or the other way round) within one save is no change.
        added, removed = set(merged.get(f"{kind}_added", [])), set(merged.get(f"{kind}_removed", []))
        new_added, new_removed = set(summary.get(f"{kind}_added", [])), set(summary.get(f"{kind}_removed", []))
        added, removed = (added - new_removed) | (new_added - removed), (removed - new_added) | (new_removed - added)
        merged[f"{kind}_added"], merged[f"{kind}_removed"] = sorted(added), sorted(removed)
    merged["notes"] = list(dict.fromkeys([*merged.get("notes", []), *summary.get("notes", [])]))
    pending.summary = {k: v for k, v in merged.items() if v}


@dataclass
class _FormerUser:
    """The actor of a user deleting itself: its name for the log, no row to point at any more."""

    username: str
    pk: None = None

    def get_username(self) -> str:
        return self.username


def _write(action: str, target: Model, summary: dict[str, Any], request: HttpRequest | None, using: str) -> None:
    if not action.endswith(".delete"):
        summary = {k: v for k, v in summary.items() if v}
        if action.endswith(".change") and not summary:
            return
    if _migrating and not _audit_table_ready(using):
        log.warning("Not audited (the audit table is not migrated yet): %s %s %s", action, target, summary)
        return
    actor = None
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and action == "user.delete" and user.pk == target.pk:
        actor = _FormerUser(user.get_username())
    AuditEvent.objects.db_manager(using).record(action, request=request, actor=actor, target=target, summary=summary)


# --- migrations -------------------------------------------------------------------------------------------------

# Database aliases `migrate` is running on: between pre_migrate and post_migrate the audit table is checked first.
_migrating: set[str] = set()


def _migration_started(sender: Any, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    _migrating.add(using)


def _migration_finished(sender: Any, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    _migrating.discard(using)


def _audit_table_ready(using: str) -> bool:
    """The audit table exists with every column the model writes (checked before the INSERT: on PostgreSQL a
    failed one would abort the migration's transaction)."""
    connection = connections[using]
    table = AuditEvent._meta.db_table
    with connection.cursor() as cursor:
        if table not in connection.introspection.table_names(cursor):
            return False
        present = {column.name for column in connection.introspection.get_table_description(cursor, table)}
    return {f.column for f in AuditEvent._meta.concrete_fields} <= present


# --- users, groups and permissions themselves -------------------------------------------------------------------


def _fields(model: type[Model]) -> tuple[str, ...]:
    return USER_FIELDS if model is get_user_model() else FIELDS[model._meta.label_lower]


def _kind(model: type[Model]) -> str:
    return "user" if model is get_user_model() else KIND[model._meta.label_lower]


def _pre_save(sender: type[Model], instance: Model, using: str, update_fields: Any = None, **kwargs: Any) -> None:
    watched = set(_fields(sender)) | ({"password"} if _kind(sender) == "user" else set())
    if update_fields is not None and not watched & set(update_fields):
        instance.__dict__[_BEFORE] = _UNAUDITED
        return
    before = None
    if instance.pk is not None:
        before = sender._default_manager.using(using).filter(pk=instance.pk).values(*watched).first()
    instance.__dict__[_BEFORE] = before


def _post_save(sender: type[Model], instance: Model, created: bool, using: str, **kwargs: Any) -> None:
    before = instance.__dict__.pop(_BEFORE, None)
    if before is _UNAUDITED:
        return
    kind, names = _kind(sender), _fields(sender)
    if created or before is None:
        changes = {n: [None, getattr(instance, n)] for n in names if getattr(instance, n) != ""}
        summary: dict[str, Any] = {"changes": changes}
        if kind == "user":
            summary["notes"] = ["password set" if instance.has_usable_password() else "no usable password"]
        _note(f"{kind}.create", instance, summary, using)
        return
    update_fields = kwargs.get("update_fields")
    if update_fields is not None:
        names = tuple(n for n in names if n in update_fields)
    changes = {n: [before[n], getattr(instance, n)] for n in names if before[n] != getattr(instance, n)}
    summary = {"changes": changes}
    if kind == "user" and before["password"] != instance.password and not _is_rehash(instance, before, kwargs):
        summary["notes"] = ["password changed" if instance.has_usable_password() else "password disabled"]
    _note(f"{kind}.change", instance, summary, using)


def _is_rehash(instance: Any, before: dict[str, Any], kwargs: dict[str, Any]) -> bool:
    """Django's check_password() re-hashes a correct password whose hasher or work factor is outdated, and saves
    only the password with `_password` cleared ("hash upgrades shouldn't be considered password changes")."""
    if getattr(instance, "_password", None) is not None or set(kwargs.get("update_fields") or ()) != {"password"}:
        return False
    try:
        hasher = identify_hasher(before["password"])
    except ValueError:
        return False
    preferred = get_hasher()
    return hasher.algorithm != preferred.algorithm or preferred.must_update(before["password"])


def _pre_delete(sender: type[Model], instance: Any, using: str, **kwargs: Any) -> None:
    """What the object was and held, read before its membership rows go with it."""
    kind = _kind(sender)
    if kind == "user":
        summary = {n: getattr(instance, n) for n in ("username", "is_active", "is_staff", "is_superuser")}
        summary["groups"] = sorted(instance.groups.using(using).values_list("name", flat=True))
        summary["permissions"] = _labels(instance.user_permissions.using(using).values_list("pk", flat=True), using)
    elif kind == "group":
        members = instance.user_set.using(using).values_list(get_user_model().USERNAME_FIELD, flat=True)
        summary = {
            "name": instance.name,
            "members": sorted(members),
            "permissions": _labels(instance.permissions.using(using).values_list("pk", flat=True), using),
        }
    else:
        users = instance.user_set.using(using).values_list(get_user_model().USERNAME_FIELD, flat=True)
        summary = {
            "permission": f"{instance.content_type.app_label}.{instance.codename}",
            "users": sorted(users),
            "groups": sorted(instance.group_set.using(using).values_list("name", flat=True)),
        }
    instance.__dict__[_DELETING] = summary


def _post_delete(sender: type[Model], instance: Any, using: str, **kwargs: Any) -> None:
    summary = instance.__dict__.pop(_DELETING, None)
    if summary is not None:
        # A copy: Django clears the instance's primary key once the deletion is done, before a batch is written.
        _note(f"{_kind(sender)}.delete", copy.copy(instance), summary, using)


# --- memberships: user ↔ group, user ↔ permission, group ↔ permission --------------------------------------------


@dataclass(frozen=True)
class _Relation:
    owner: type[Model]  # whose event it is (a user, a group)
    owner_attname: str  # its column on the through table ("user_id")
    item: type[Model]  # what it gains or loses (a group, a permission)
    item_attname: str
    key: str  # "groups" / "permissions" in the summary


_RELATIONS: dict[type[Model], _Relation] = {}


def _labels(ids: Iterable[int], using: str) -> list[str]:
    rows = Permission.objects.using(using).filter(pk__in=list(ids)).values_list("content_type__app_label", "codename")
    return sorted(f"{app_label}.{codename}" for app_label, codename in rows)


def _m2m_changed(
    sender: type[Model], instance: Any, action: str, reverse: bool, pk_set: set[Any] | None, using: str, **kwargs: Any
) -> None:
    relation = _RELATIONS[sender]
    mine, theirs = (
        (relation.item_attname, relation.owner_attname) if reverse else (relation.owner_attname, relation.item_attname)
    )
    if action == "post_add":
        pairs = [(pk, instance.pk) if reverse else (instance.pk, pk) for pk in pk_set or ()]
    elif action in ("pre_remove", "pre_clear"):
        # remove() names what to remove whether it is there or not; record only the rows that exist.
        rows = sender._default_manager.using(using).filter(**{mine: instance.pk})
        if action == "pre_remove":
            rows = rows.filter(**{f"{theirs}__in": pk_set or ()})
        removing = instance.__dict__.setdefault(_REMOVING, {})
        removing[sender] = list(rows.values_list(relation.owner_attname, relation.item_attname))
        return
    elif action in ("post_remove", "post_clear"):
        pairs = instance.__dict__.get(_REMOVING, {}).pop(sender, [])
    else:
        return
    if not pairs:
        return
    owners = (
        {instance.pk: instance}
        if not reverse
        else relation.owner._default_manager.using(using).in_bulk({o for o, _ in pairs})
    )
    item_ids = {i for _, i in pairs}
    if relation.item is Permission:
        rows = (
            Permission.objects.using(using)
            .filter(pk__in=item_ids)
            .values_list("pk", "content_type__app_label", "codename")
        )
        names = {pk: f"{app_label}.{codename}" for pk, app_label, codename in rows}
    else:
        names = dict(relation.item._default_manager.using(using).filter(pk__in=item_ids).values_list("pk", "name"))
    verb = "added" if action == "post_add" else "removed"
    by_owner: dict[Any, list[str]] = {}
    for owner_pk, item_pk in pairs:
        by_owner.setdefault(owner_pk, []).append(names.get(item_pk, str(item_pk)))
    for owner_pk, items in by_owner.items():
        owner = owners.get(owner_pk)
        if owner is not None:
            _note(f"{_kind(relation.owner)}.change", owner, {f"{relation.key}_{verb}": sorted(items)}, using)


def connect() -> None:
    """Connect the receivers to the real auth models (portal/apps.py calls this once, in ready())."""
    User = get_user_model()
    for model in (User, Group, Permission):
        uid = f"portal.useraudit.{model._meta.label_lower}"
        pre_save.connect(_pre_save, sender=model, dispatch_uid=f"{uid}.pre_save")
        post_save.connect(_post_save, sender=model, dispatch_uid=f"{uid}.post_save")
        pre_delete.connect(_pre_delete, sender=model, dispatch_uid=f"{uid}.pre_delete")
        post_delete.connect(_post_delete, sender=model, dispatch_uid=f"{uid}.post_delete")
    for owner, name in ((User, "groups"), (User, "user_permissions"), (Group, "permissions")):
        m2m = owner._meta.get_field(name)
        through = m2m.remote_field.through
        _RELATIONS[through] = _Relation(
            owner=owner,
            owner_attname=through._meta.get_field(m2m.m2m_field_name()).attname,
            item=m2m.remote_field.model,
            item_attname=through._meta.get_field(m2m.m2m_reverse_field_name()).attname,
            key="groups" if name == "groups" else "permissions",
        )
        m2m_changed.connect(_m2m_changed, sender=through, dispatch_uid=f"portal.useraudit.{through._meta.label_lower}")
    pre_migrate.connect(_migration_started, dispatch_uid="portal.useraudit.pre_migrate")
    post_migrate.connect(_migration_finished, dispatch_uid="portal.useraudit.post_migrate")
