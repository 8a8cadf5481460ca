"""PostgreSQL storage: models, the one database handle, queries, migrations, embedded server."""
