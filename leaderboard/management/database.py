"""What the operator's commands check before touching the database."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor


def require_migrated() -> None:
    """A clear error instead of "no such table" deep in a traceback, when the commands
    run by hand (build_benchmark, import_benchmark, rank) meet a database that was never
    migrated (bin/run migrates; a hand-made VAR_DIR or DATABASE_URL may not be)."""
    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        where = settings.DATABASES[DEFAULT_DB_ALIAS].get("NAME")
        raise CommandError(
            f"the database ({where}) is not set up: {len(pending)} migration(s) not applied. "
            "Run `python manage.py migrate` first (bin/run does it for you)."
        )
