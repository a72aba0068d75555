"""`manage.py create_token USERNAME`: print a new API token for that user."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from leaderboard import services


class Command(BaseCommand):
    help = "Create an API token for a user (the user is created if missing with --create)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--create", action="store_true", help="create the user if missing")
        parser.add_argument("--label", default="command line")

    def handle(self, *args, username: str, create: bool, label: str, **options) -> None:
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            if not create:
                raise CommandError(f"no user {username!r} (pass --create to make one)")
            user = User.objects.create_user(username=username)
        self.stdout.write(services.token_create(user=user, label=label).key)
