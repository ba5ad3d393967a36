"""Every URL pattern, walked as each persona. A view added without an access rule fails here."""

from __future__ import annotations

from django.urls import URLPattern

from portal.models import Job, KnoxAccount
from portal.roles import ROLES
from tests.base import BaseTestCase
from tests.portal.helpers import OUR_NAMESPACES, admin_route, build_world, iter_patterns

PUBLIC = {"login", "healthz", "admin:login"}
WORLD_JOBS = 2  # build_world's KDP upload and firmware lookup: nobody's request may add one


# The permissions (any one of them) each admin model page needs, by Django's admin rules.
ADMIN_PAGE_PERMS = {
    "changelist": ("view", "change"),
    "change": ("view", "change"),
    "history": ("view", "change"),
    "add": ("add",),
    "delete": ("delete",),
    "password_change": ("change",),  # auth.User's "change password" page
}


class AccessTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.world = build_world()
        self.account, self.job, self.ids = self.world.account, self.world.job, self.world.ids

    def urls(self):
        return self.world.urls()

    def test_anonymous_users_reach_only_login_healthz_and_static(self):
        served = []
        for url, name, _ in self.urls():
            for method in ("get", "post"):
                r = getattr(self.client, method)(url)
                if r.status_code < 300 and name not in PUBLIC:
                    served.append((method, url, r.status_code))
                if name not in PUBLIC:
                    assert r.status_code in (302, 403, 404, 405), (method, url, r.status_code)
                    if r.status_code == 302:
                        assert "/login/" in r["Location"], (method, url, r["Location"])
        assert served == []
        assert self.client.get("/static/css/portal.css").status_code == 200

    def test_every_portal_view_declares_its_permission(self):
        missing = []
        for _, name, pattern in iter_patterns():
            if name.split(":")[0] in OUR_NAMESPACES and not hasattr(pattern.callback, "required_perm"):
                missing.append(name)
        assert missing == []

    def test_viewer_gets_403_on_every_state_changing_view_and_nothing_is_queued(self):
        self.client.force_login(self.viewer)
        checked = 0
        for url, name, pattern in self.urls():
            perm = getattr(pattern.callback, "required_perm", None)
            if name.split(":")[0] not in OUR_NAMESPACES or perm in (None, "portal.access_portal"):
                continue
            r = self.client.post(url, {"name": "x"})
            assert r.status_code == 403, (url, r.status_code)
            checked += 1
        assert checked >= 5
        assert Job.objects.count() == WORLD_JOBS and KnoxAccount.objects.count() == 1

    def test_viewer_reads_every_page(self):
        self.client.force_login(self.viewer)
        for url, _name, pattern in self.urls():
            if getattr(pattern.callback, "required_perm", None) == "portal.access_portal":
                r = self.client.get(url, follow=True)
                assert r.status_code in (200, 400), (url, r.status_code)

    def test_outsider_without_a_role_is_refused_everywhere(self):
        self.client.force_login(self.outsider)
        for url, name, _pattern in self.urls():
            if name.split(":")[0] in OUR_NAMESPACES:
                assert self.client.get(url).status_code in (403, 405), url

    def test_operator_cannot_manage_accounts(self):
        self.client.force_login(self.operator)
        assert self.client.get("/accounts/new/").status_code == 403
        assert self.client.post(f"/accounts/{self.account.pk}/test/").status_code == 403

    def test_admin_site_needs_staff(self):
        self.client.force_login(self.operator)
        r = self.client.get("/admin/")
        assert r.status_code == 302 and "/admin/login/" in r["Location"]
        self.client.force_login(self.admin)
        assert self.client.get("/admin/").status_code == 200
        assert self.client.get("/admin/portal/auditevent/").status_code == 200

    def test_state_changing_views_refuse_get(self):
        self.client.force_login(self.admin)
        for url in (
            f"/jobs/{self.job.pk}/cancel/",
            f"/accounts/{self.account.pk}/keys/",
            f"/accounts/{self.account.pk}/test/",
        ):
            assert self.client.get(url).status_code == 405, url

    def expected(self, role: str, url: str, name: str, pattern: URLPattern) -> str | None:
        """What `role` must get on a GET of the route: "allowed" (not 403), "refused" (403), "login" (302 to the
        portal login), "admin-login" (302 to the admin's login, Django's answer to non-staff), or None when the page
        cannot tell (history of a model with no row answers "does not exist" before it checks permissions)."""
        perms = set(ROLES.get(role, []))
        if name in PUBLIC:
            return "allowed"
        if role == "anonymous":
            return "login"
        if name in ("logout", "admin:logout"):  # the admin's sends a non-staff user to the admin index
            return "allowed"
        found = admin_route(name)
        if url.startswith("/admin/"):
            if role != "admin":  # only the admin persona is staff
                return "admin-login"
            if found is None:  # index, app lists, jsi18n, password change, redirects: any staff member
                if name == "admin:autocomplete":  # asks for a KnoxAccount list
                    return "allowed" if {"portal.view_knoxaccount", "portal.change_knoxaccount"} & perms else "refused"
                return "allowed"
            model, page = found
            if page == "history" and not model._default_manager.exists():
                return None
            needed = {f"{model._meta.app_label}.{action}_{model._meta.model_name}" for action in ADMIN_PAGE_PERMS[page]}
            return "allowed" if needed & perms else "refused"
        perm = getattr(pattern.callback, "required_perm", None)
        assert perm is not None, f"{name} declares no permission: add @require_perm"
        return "allowed" if perm in perms else "refused"

    def test_each_role_reaches_exactly_what_its_permissions_allow(self):
        """Walk every URL pattern as anonymous, viewer, operator and admin. What each may reach follows from the
        views' required_perm (portal, kdp, guard, efota), the admin's model permissions, and portal/roles.py."""
        wrong, allowed, skipped = [], {}, []
        for role, user in (("anonymous", None), ("viewer", self.viewer), ("operator", self.operator), ("admin", self.admin)):  # fmt: skip
            self.client.logout()
            if user is not None:
                self.client.force_login(user)
            allowed[role] = set()
            for url, name, pattern in self.urls():
                want = self.expected(role, url, name, pattern)
                if want is None:
                    skipped.append((role, url))
                    continue
                r = self.client.get(url)
                location = r.get("Location", "")
                got = (
                    "refused" if r.status_code == 403
                    # Anonymous users meet the admin's own login page on the admin site's pages, the portal's on
                    # the admin's model pages (LoginRequiredMiddleware answers first there): either is a login.
                    else "login" if r.status_code == 302 and role == "anonymous" and "/login/" in location
                    else "admin-login" if r.status_code == 302 and location.startswith("/admin/login/")
                    else "login" if r.status_code == 302 and location.startswith("/login/")
                    else "allowed"
                )  # fmt: skip
                # Refused whatever the method: a POST must not get past the permission check either.
                ours = name.split(":")[0] in OUR_NAMESPACES
                if got == want == "refused" and ours and self.client.post(url, {"name": "x"}).status_code != 403:
                    got = "allowed (POST)"
                if got != want:
                    wrong.append((role, url, name, want, got, r.status_code))
                if got == "allowed":
                    allowed[role].add(name or url)
        assert wrong == [], "\n".join(map(str, wrong))
        ours = {role: {n for n in names if n.split(":")[0] in OUR_NAMESPACES} for role, names in allowed.items()}
        assert ours["anonymous"] == set()
        assert ours["viewer"] < ours["operator"] < ours["admin"]
        assert {"portal:job_cancel", "kdp:upload", "guard:device_act"} <= ours["operator"] - ours["viewer"]
        assert ours["admin"] - ours["operator"] == {
            "portal:account_create", "portal:account_edit", "portal:account_keys", "portal:account_test"
        }  # fmt: skip
        assert {"admin:index", "admin:portal_knoxaccount_change", "admin:auth_user_add"} <= allowed["admin"]
        assert "admin:portal_auditevent_delete" not in allowed["admin"]  # the audit log is append-only
        assert {n for n in allowed["operator"] if n.startswith("admin:")} == {"admin:login", "admin:logout"}
        # Only history pages of models the world has no row of (the admin says "does not exist" before it checks).
        assert skipped and all(url.endswith("/history/") for _, url in skipped), skipped
        assert Job.objects.count() == WORLD_JOBS and KnoxAccount.objects.count() == 1
