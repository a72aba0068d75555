"""The deployment helpers now live in devkit/deployment.py (bench/ uses them too); this
module keeps the tests' imports working."""

from devkit.deployment import (  # noqa: F401
    PG_URL,
    REDIS_URL,
    Deployment,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    port_open,
    zip_folder,
)
