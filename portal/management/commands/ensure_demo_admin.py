"""Create the demo admin user on first run, printing its random password once.

The password is generated here, hashed into the database like any Django password, and printed to the terminal
a single time; it is never written anywhere else. Run again: nothing changes (reset it with
`python manage.py changepassword admin`).
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the demo admin user (role 'admin', staff) with a random password printed once."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            self.stdout.write(
                f"Demo admin '{username}' exists; its password was printed when it was created "
                f"(reset it with: python manage.py changepassword {username})."
            )
            return
        password = secrets.token_urlsafe(12)
        user = User.objects.create_user(username=username, password=password, is_staff=True, is_superuser=True)
        user.groups.add(Group.objects.get(name="admin"))
        bar = "=" * 64
        self.stdout.write(
            self.style.SUCCESS(
                f"\n{bar}\n Demo admin created. Log in at http://127.0.0.1:8000/\n"
                f"   username: {username}\n   password: {password}\n"
                f" This password is shown once and not stored anywhere in plain text.\n{bar}\n"
            )
        )
