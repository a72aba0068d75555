"""`manage.py reap`: requeue jobs whose worker vanished (run from cron every few minutes)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from evaluator.services.reaper import jobs_reap


class Command(BaseCommand):
    help = "Requeue jobs whose worker died and networks that stalled mid-pipeline."

    def handle(self, *args, **options) -> None:
        ids = jobs_reap()
        self.stdout.write(f"requeued {len(ids)} network(s)" + (f": {ids}" if ids else ""))
