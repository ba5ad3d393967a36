"""The Django admin's user and group pages: nobody below superuser hands out more than it holds."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission, User

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
