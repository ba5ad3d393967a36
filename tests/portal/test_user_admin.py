"""The Django admin's user and group pages: nobody below superuser hands out more than it holds, and every change
to a user, group or permission (admin or shell) is audited without a password or hash."""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

from django.apps import apps
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.db import connection
from django.db.models.signals import post_migrate, pre_migrate
from django.test import override_settings

from portal.models import AuditEvent
from tests.base import PASSWORD, BaseTestCase, make_user

NEW_PASSWORD = "plum-Rivet-9-quartz"


def perm(label: str) -> Permission:
    app_label, codename = label.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def change_data(user: User, **overrides: Any) -> dict[str, Any]:
    """What the admin's change form of `user` posts when saved untouched, with `overrides` (None removes a field)."""
    data: dict[str, Any] = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "groups": [str(pk) for pk in user.groups.values_list("pk", flat=True)],
        "user_permissions": [str(pk) for pk in user.user_permissions.values_list("pk", flat=True)],
    }
    for flag in ("is_active", "is_staff", "is_superuser"):
        if getattr(user, flag):
            data[flag] = "on"
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


class UserAdminTestCase(BaseTestCase):
    """alice (role admin, staff) against root (superuser), and sam: an admin who may also delete users and edit
    groups. `auditors` is a group that carries a permission no admin has."""

    def setUp(self) -> None:
        super().setUp()
        self.root = make_user("root", is_staff=True, is_superuser=True)
        self.sam = make_user("sam", "admin", is_staff=True)
        self.sam.user_permissions.add(
            perm("auth.delete_user"), perm("auth.add_group"), perm("auth.change_group"), perm("auth.delete_group")
        )
        self.auditors = Group.objects.create(name="auditors")
        self.auditors.permissions.add(perm("portal.delete_knoxaccount"), perm("portal.view_auditevent"))
        self.groups = {g.name: g for g in Group.objects.all()}
        self.last_event_id = AuditEvent.objects.order_by("id").values_list("id", flat=True).last() or 0

    def url(self, user: User, page: str = "change") -> str:
        return f"/admin/auth/user/{user.pk}/{page}/"

    def events(self) -> list[AuditEvent]:
        """The audit events written since setUp, oldest first, but sign-ins (force_login writes one)."""
        events = AuditEvent.objects.filter(id__gt=self.last_event_id).exclude(action__startswith="auth.")
        return list(events.order_by("id"))

    # --- the escalation of the bug report -------------------------------------------------------------------

    def test_admin_cannot_make_itself_superuser_with_a_crafted_post(self):
        self.client.force_login(self.admin)
        r = self.client.post(self.url(self.admin), change_data(self.admin, is_superuser="on"))
        assert r.status_code == 302  # the rest of the form saved: only the flag was not taken
        self.admin.refresh_from_db()
        assert not self.admin.is_superuser
        r = self.client.get(self.url(self.admin))
        assert r.status_code == 200
        assert 'name="is_superuser"' not in r.content.decode()  # read-only on the page

    def test_admin_cannot_make_another_user_superuser_nor_unmake_one(self):
        self.client.force_login(self.admin)
        self.client.post(self.url(self.operator), change_data(self.operator, is_superuser="on"))
        self.operator.refresh_from_db()
        assert not self.operator.is_superuser
        r = self.client.post(self.url(self.root), change_data(self.root, is_superuser=None))
        assert r.status_code == 403
        self.root.refresh_from_db()
        assert self.root.is_superuser

    def test_admin_cannot_grant_or_remove_staff_status(self):
        self.client.force_login(self.admin)
        self.client.post(self.url(self.operator), change_data(self.operator, is_staff="on"))
        peer = make_user("bea", "admin", is_staff=True)  # holds nothing alice lacks: alice may edit her
        assert self.client.post(self.url(peer), change_data(peer, is_staff=None, last_name="B")).status_code == 302
        self.operator.refresh_from_db()
        peer.refresh_from_db()
        assert not self.operator.is_staff and peer.is_staff and peer.last_name == "B"
        assert 'name="is_staff"' not in self.client.get(self.url(self.operator)).content.decode()

    def test_admin_cannot_change_or_reset_the_password_of_a_superuser(self):
        self.client.force_login(self.admin)
        hash_before = self.root.password
        assert self.client.get(self.url(self.root, "password")).status_code == 403
        data = {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"}
        assert self.client.post(self.url(self.root, "password"), data).status_code == 403
        data = {"password1": "", "password2": "", "usable_password": "false", "unset-password": "1"}
        assert self.client.post(self.url(self.root, "password"), data).status_code == 403
        r = self.client.post(self.url(self.root), change_data(self.root, email="mine@example.org", is_active=None))
        assert r.status_code == 403
        self.root.refresh_from_db()
        assert self.root.password == hash_before and self.root.is_active and self.root.email == "root@example.org"
        # The superuser's page still shows (the admin role may view users), read-only: no save button.
        r = self.client.get(self.url(self.root))
        assert r.status_code == 200 and 'name="_save"' not in r.content.decode()

    def test_no_one_below_superuser_deletes_a_superuser(self):
        self.client.force_login(self.sam)  # sam holds auth.delete_user
        assert self.client.get(self.url(self.root, "delete")).status_code == 403
        assert self.client.post(self.url(self.root, "delete"), {"post": "yes"}).status_code == 403
        bulk = {"action": "delete_selected", "_selected_action": [self.root.pk, self.viewer.pk], "post": "yes"}
        assert self.client.post("/admin/auth/user/", bulk).status_code == 403
        assert User.objects.filter(pk__in=[self.root.pk, self.viewer.pk]).count() == 2
        # An ordinary user, sam may delete.
        assert self.client.post(self.url(self.viewer, "delete"), {"post": "yes"}).status_code == 302
        assert not User.objects.filter(pk=self.viewer.pk).exists()

    def test_admin_cannot_grant_a_group_or_permission_beyond_its_own(self):
        self.client.force_login(self.admin)
        r = self.client.post(self.url(self.operator), change_data(self.operator, groups=[self.auditors.pk]))
        assert r.status_code == 200
        error = r.context["adminform"].form.errors["groups"][0]
        assert "auditors" in error and "portal.delete_knoxaccount" in error
        delete_user = perm("auth.delete_user")
        r = self.client.post(self.url(self.operator), change_data(self.operator, user_permissions=[delete_user.pk]))
        assert r.status_code == 200
        assert "auth.delete_user" in r.context["adminform"].form.errors["user_permissions"][0]
        self.operator.refresh_from_db()
        assert list(self.operator.groups.values_list("name", flat=True)) == ["operator"]
        assert not self.operator.user_permissions.exists()
        assert self.events() == []

    def test_admin_cannot_touch_a_user_who_holds_more_than_it(self):
        """Resetting the password of someone with more rights would hand those rights over; removing a group the
        admin could not grant is refused as well."""
        self.operator.groups.add(self.auditors)
        self.client.force_login(self.admin)
        r = self.client.post(self.url(self.operator), change_data(self.operator, groups=[self.groups["operator"].pk]))
        assert r.status_code == 403
        data = {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"}
        assert self.client.post(self.url(self.operator, "password"), data).status_code == 403
        assert self.operator.groups.filter(name="auditors").exists()
        assert self.operator.check_password(PASSWORD)

    def test_group_admin_cannot_add_permissions_beyond_its_own(self):
        self.client.force_login(self.sam)  # sam may change groups
        viewer = self.groups["viewer"]
        url = f"/admin/auth/group/{viewer.pk}/change/"
        held = [p.pk for p in viewer.permissions.all()]
        r = self.client.post(url, {"name": "viewer", "permissions": [*held, perm("portal.delete_knoxaccount").pk]})
        assert r.status_code == 200
        assert "portal.delete_knoxaccount" in r.context["adminform"].form.errors["permissions"][0]
        assert set(viewer.permissions.values_list("pk", flat=True)) == set(held)
        # A group that carries more than sam holds: read-only for sam, a crafted POST refused, no deletion.
        url = f"/admin/auth/group/{self.auditors.pk}/change/"
        assert self.client.post(url, {"name": "auditors", "permissions": []}).status_code == 403
        assert self.client.post(f"/admin/auth/group/{self.auditors.pk}/delete/", {"post": "yes"}).status_code == 403
        assert self.auditors.permissions.count() == 2
        r = self.client.post(
            "/admin/auth/group/add/", {"name": "deleters", "permissions": [perm("auth.delete_user").pk]}
        )
        assert r.status_code == 302  # within what sam holds
        r = self.client.post("/admin/auth/group/add/", {"name": "x", "permissions": [perm("auth.delete_group").pk, perm("auth.add_permission").pk]})  # fmt: skip
        assert r.status_code == 200 and not Group.objects.filter(name="x").exists()

    # --- the admin role's ordinary job, and the superuser's full power ---------------------------------------

    def test_admin_adds_staff_sets_passwords_and_gives_roles(self):
        self.client.force_login(self.admin)
        data = {"username": "newbie", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"}
        assert self.client.post("/admin/auth/user/add/", data).status_code == 302
        newbie = User.objects.get(username="newbie")
        for role in ("viewer", "operator", "admin"):
            groups = [self.groups[role].pk]
            r = self.client.post(self.url(newbie), change_data(newbie, groups=groups, first_name="New"))
            assert r.status_code == 302, role
            assert list(newbie.groups.values_list("name", flat=True)) == [role]
        control = perm("portal.control_guard_devices")
        r = self.client.post(self.url(self.operator), change_data(self.operator, user_permissions=[control.pk]))
        assert r.status_code == 302 and self.operator.has_perm("portal.control_guard_devices")
        data = {"password1": "Another-9-secret", "password2": "Another-9-secret", "usable_password": "true"}
        assert self.client.post(self.url(self.operator, "password"), data).status_code == 302
        self.operator.refresh_from_db()
        assert self.operator.check_password("Another-9-secret")
        # Its own page: it may edit its name and password, and still is neither superuser nor less staff.
        r = self.client.post(self.url(self.admin), change_data(self.admin, last_name="Admin"))
        assert r.status_code == 302
        self.admin.refresh_from_db()
        assert self.admin.last_name == "Admin" and self.admin.is_staff and not self.admin.is_superuser

    def test_superuser_can_do_everything(self):
        self.client.force_login(self.root)
        r = self.client.get(self.url(self.operator))
        assert 'name="is_superuser"' in r.content.decode() and 'name="is_staff"' in r.content.decode()
        data = change_data(self.operator, is_superuser="on", is_staff="on", groups=[self.auditors.pk])
        data["user_permissions"] = [perm("auth.delete_user").pk]
        assert self.client.post(self.url(self.operator), data).status_code == 302
        self.operator.refresh_from_db()
        assert self.operator.is_superuser and self.operator.is_staff
        assert list(self.operator.groups.values_list("name", flat=True)) == ["auditors"]
        data = {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"}
        assert self.client.post(self.url(self.operator, "password"), data).status_code == 302
        self.operator.refresh_from_db()
        assert self.operator.check_password(NEW_PASSWORD)
        r = self.client.post(self.url(self.sam), change_data(self.sam, is_staff=None))
        self.sam.refresh_from_db()
        assert r.status_code == 302 and not self.sam.is_staff
        url = f"/admin/auth/group/{self.auditors.pk}/change/"
        assert self.client.post(url, {"name": "auditors", "permissions": []}).status_code == 302
        assert self.client.post(self.url(self.operator, "delete"), {"post": "yes"}).status_code == 302
        assert not User.objects.filter(pk=self.operator.pk).exists()

    # --- the audit of every change ----------------------------------------------------------------------------

    def test_an_admin_save_writes_one_event_with_old_and_new_values(self):
        self.client.force_login(self.admin)
        control = perm("portal.control_guard_devices")
        data = change_data(
            self.viewer,
            email="victor@new.example.org",
            first_name="Victor",
            is_active=None,
            groups=[self.groups["operator"].pk],
            user_permissions=[control.pk],
        )
        assert self.client.post(self.url(self.viewer), data).status_code == 302
        [event] = self.events()
        assert event.action == "user.change" and event.actor == self.admin and event.actor_name == "alice"
        assert event.target_type == "auth.user" and event.target_id == str(self.viewer.pk)
        assert event.target_repr == "victor" and event.ip == "127.0.0.1"
        assert event.summary == {
            "changes": {
                "email": ["victor@example.org", "victor@new.example.org"],
                "first_name": ["", "Victor"],
                "is_active": [True, False],
            },
            "groups_added": ["operator"],
            "groups_removed": ["viewer"],
            "permissions_added": ["portal.control_guard_devices"],
        }
        # Saving it again untouched writes nothing.
        self.viewer.refresh_from_db()
        assert self.client.post(self.url(self.viewer), change_data(self.viewer)).status_code == 302
        assert len(self.events()) == 1

    def test_a_superuser_flag_change_is_recorded(self):
        self.client.force_login(self.root)
        self.client.post(self.url(self.operator), change_data(self.operator, is_superuser="on", is_staff="on"))
        [event] = self.events()
        assert event.actor == self.root and event.action == "user.change"
        assert event.summary == {"changes": {"is_staff": [False, True], "is_superuser": [False, True]}}

    def test_a_password_change_is_recorded_without_password_or_hash(self):
        old_hash = self.operator.password
        self.client.force_login(self.admin)
        data = {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"}
        assert self.client.post(self.url(self.operator, "password"), data).status_code == 302
        self.operator.refresh_from_db()
        [event] = self.events()
        assert event.action == "user.change" and event.actor == self.admin
        assert event.target_repr == "olivia" and event.summary == {"notes": ["password changed"]}
        # Its own password, through the admin site's page.
        data = {"old_password": PASSWORD, "new_password1": "Own-new-7-secret", "new_password2": "Own-new-7-secret"}
        assert self.client.post("/admin/password_change/", data).status_code == 302
        self.admin.refresh_from_db()
        event = self.events()[-1]
        assert event.actor == self.admin and event.target_repr == "alice"
        assert event.summary == {"notes": ["password changed"]}
        stored = str(list(AuditEvent.objects.values()))
        for secret in (
            NEW_PASSWORD,
            "Own-new-7-secret",
            PASSWORD,
            old_hash,
            self.operator.password,
            self.admin.password,
        ):
            assert secret not in stored
        for part in self.operator.password.split("$"):  # not even the salt or the digest alone
            assert len(part) < 8 or part not in stored

    def test_creating_and_deleting_users_in_the_admin_is_recorded(self):
        self.client.force_login(self.admin)
        data = {"username": "newbie", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"}
        assert self.client.post("/admin/auth/user/add/", data).status_code == 302
        [event] = self.events()
        assert event.action == "user.create" and event.actor == self.admin and event.target_repr == "newbie"
        assert event.summary == {
            "changes": {"username": [None, "newbie"], "is_active": [None, True], "is_staff": [None, False],
                        "is_superuser": [None, False]},
            "notes": ["password set"],
        }  # fmt: skip
        self.client.force_login(self.sam)
        assert self.client.post(self.url(self.operator, "delete"), {"post": "yes"}).status_code == 302
        event = self.events()[-1]
        assert event.action == "user.delete" and event.actor == self.sam and event.target_repr == "olivia"
        assert event.summary == {
            "username": "olivia", "is_active": True, "is_staff": False, "is_superuser": False,
            "groups": ["operator"], "permissions": [],
        }  # fmt: skip
        assert len(self.events()) == 2

    def test_a_superuser_deleting_itself_is_recorded_under_its_name(self):
        self.client.force_login(self.root)
        assert self.client.post(self.url(self.root, "delete"), {"post": "yes"}).status_code == 302
        [event] = self.events()
        assert event.action == "user.delete" and event.target_repr == "root"
        assert event.actor is None and event.actor_name == "root"

    def test_group_changes_in_the_admin_are_recorded(self):
        self.client.force_login(self.root)
        url = f"/admin/auth/group/{self.auditors.pk}/change/"
        keep = perm("portal.view_auditevent").pk
        data = {"name": "auditors-eu", "permissions": [keep, perm("auth.view_user").pk]}
        assert self.client.post(url, data).status_code == 302
        [event] = self.events()
        assert event.action == "group.change" and event.actor == self.root and event.target_repr == "auditors-eu"
        assert event.summary == {
            "changes": {"name": ["auditors", "auditors-eu"]},
            "permissions_added": ["auth.view_user"],
            "permissions_removed": ["portal.delete_knoxaccount"],
        }
        self.operator.groups.add(self.auditors)
        assert self.client.post(f"/admin/auth/group/{self.auditors.pk}/delete/", {"post": "yes"}).status_code == 302
        event = self.events()[-1]
        assert event.action == "group.delete" and event.actor == self.root
        assert event.summary == {
            "name": "auditors-eu", "members": ["olivia"], "permissions": ["auth.view_user", "portal.view_auditevent"]
        }  # fmt: skip

    def test_shell_changes_are_recorded_with_actor_system(self):
        bob = User.objects.create_user("bob", email="bob@example.org", password=NEW_PASSWORD)
        bob.groups.add(self.groups["viewer"], self.groups["operator"])
        bob.groups.remove(self.groups["viewer"], self.groups["admin"])  # not in admin: no removal recorded
        self.groups["admin"].user_set.add(bob)  # the reverse side names the user too
        self.groups["viewer"].user_set.clear()  # victor, the only member left
        bob.user_permissions.add(perm("auth.delete_user"))
        bob.user_permissions.clear()
        self.auditors.permissions.remove(perm("portal.delete_knoxaccount"))
        bob.email = "robert@example.org"
        bob.set_password("Shell-set-5-secret")
        bob.save()
        bob.delete()
        ct = Permission.objects.get(codename="view_user").content_type
        extra = Permission.objects.create(codename="audit_extra", name="Extra", content_type=ct)
        self.auditors.permissions.add(extra)
        extra.delete()
        got = [(e.actor_name, e.action, e.target_repr, e.summary) for e in self.events()]
        assert got == [
            ("system", "user.create", "bob", {
                "changes": {"username": [None, "bob"], "email": [None, "bob@example.org"], "is_active": [None, True],
                            "is_staff": [None, False], "is_superuser": [None, False]},
                "notes": ["password set"]}),
            ("system", "user.change", "bob", {"groups_added": ["operator", "viewer"]}),
            ("system", "user.change", "bob", {"groups_removed": ["viewer"]}),
            ("system", "user.change", "bob", {"groups_added": ["admin"]}),
            ("system", "user.change", "victor", {"groups_removed": ["viewer"]}),
            ("system", "user.change", "bob", {"permissions_added": ["auth.delete_user"]}),
            ("system", "user.change", "bob", {"permissions_removed": ["auth.delete_user"]}),
            ("system", "group.change", "auditors", {"permissions_removed": ["portal.delete_knoxaccount"]}),
            ("system", "user.change", "bob", {"changes": {"email": ["bob@example.org", "robert@example.org"]},
                                              "notes": ["password changed"]}),
            ("system", "user.delete", "bob", {"username": "bob", "is_active": True, "is_staff": False,
                                              "is_superuser": False, "groups": ["admin", "operator"],
                                              "permissions": []}),
            ("system", "permission.create", "Authentication and Authorization | user | Extra",
             {"changes": {"codename": [None, "audit_extra"], "name": [None, "Extra"]}}),
            ("system", "group.change", "auditors", {"permissions_added": ["auth.audit_extra"]}),
            ("system", "permission.delete", "Authentication and Authorization | user | Extra",
             {"permission": "auth.audit_extra", "users": [], "groups": ["auditors"]}),
        ]  # fmt: skip
        assert all(e.actor is None and e.ip is None for e in self.events())
        assert "Shell-set-5-secret" not in str(list(AuditEvent.objects.values()))

    def test_createsuperuser_noinput_is_recorded_as_system(self):
        with mock.patch.dict(os.environ, {"DJANGO_SUPERUSER_PASSWORD": NEW_PASSWORD}):
            call_command("createsuperuser", interactive=False, username="boss", email="boss@example.org", verbosity=0)
        [event] = self.events()
        assert event.actor_name == "system" and event.action == "user.create" and event.target_repr == "boss"
        assert event.summary["changes"]["is_superuser"] == [None, True]
        assert event.summary["notes"] == ["password set"]
        boss = User.objects.get(username="boss")
        stored = str(list(AuditEvent.objects.values()))
        assert NEW_PASSWORD not in stored and boss.password not in stored

    def test_logging_in_is_not_a_change_to_the_user(self):
        assert self.client.post("/login/", {"username": "olivia", "password": PASSWORD}).status_code == 302
        assert AuditEvent.objects.filter(action="auth.login", actor=self.operator).count() == 1
        assert self.events() == []  # last_login was saved, nothing audited changed


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1000  # the test needs another algorithm than MD5, not a slow one


class HashUpgradeTestCase(BaseTestCase):
    @override_settings(
        PASSWORD_HASHERS=[
            "tests.portal.test_user_admin.FastPBKDF2PasswordHasher",
            "django.contrib.auth.hashers.MD5PasswordHasher",
        ]
    )
    def test_a_hash_upgrade_at_login_is_not_a_password_change(self):
        User.objects.filter(pk=self.operator.pk).update(password=make_password(PASSWORD, hasher="md5"))
        before = AuditEvent.objects.count()
        assert self.client.post("/login/", {"username": "olivia", "password": PASSWORD}).status_code == 302
        self.operator.refresh_from_db()
        assert self.operator.password.startswith("pbkdf2_sha256$")  # Django re-hashed it at login
        assert [e.action for e in AuditEvent.objects.order_by("id")[before:]] == ["auth.login"]


class MigrationTestCase(BaseTestCase):
    def test_a_change_during_migrate_before_the_audit_table_exists_does_not_crash(self):
        """A migration (or a post_migrate handler) that saves a real User while the audit table is not there yet
        must not break `migrate`. The table is renamed away inside the test's transaction to stand for that."""
        table = AuditEvent._meta.db_table
        # What `migrate` sends around its run (the receivers of post_migrate only fill in missing rows).
        signal_args = {"app_config": apps.get_app_config("portal"), "verbosity": 0, "interactive": False,
                       "using": "default", "apps": apps, "plan": []}  # fmt: skip
        pre_migrate.send(sender=signal_args["app_config"], **signal_args)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
            with self.assertLogs("portal.useraudit", "WARNING") as logs:
                User.objects.create_user("early", password=NEW_PASSWORD)
                self.groups_add_early()
            assert "user.create" in logs.output[0] and "early" in logs.output[0]
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
        finally:
            post_migrate.send(sender=signal_args["app_config"], **signal_args)
        assert User.objects.filter(username="early").exists()
        # After migrate the audit works as before.
        User.objects.create_user("late", password=NEW_PASSWORD)
        assert AuditEvent.objects.filter(action="user.create", target_repr="late").count() == 1

    def groups_add_early(self) -> None:
        User.objects.get(username="early").groups.add(Group.objects.get(name="viewer"))
