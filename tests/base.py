"""Shared test base with named personas (healthchecks' alice/bob/charlie, our roles)."""

from __future__ import annotations

from django.contrib.auth.models import Group, User
from django.test import TestCase

PASSWORD = "correct horse battery staple"


def make_user(username: str, role: str | None = None, **extra: object) -> User:
    user = User.objects.create_user(username=username, password=PASSWORD, email=f"{username}@example.org", **extra)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


class BaseTestCase(TestCase):
    """admin (role admin, staff), operator, viewer (read-only) and outsider (no role)."""

    def setUp(self) -> None:
        super().setUp()
        self.admin = make_user("alice", "admin", is_staff=True)
        self.operator = make_user("olivia", "operator")
        self.viewer = make_user("victor", "viewer")
        self.outsider = make_user("charlie")
