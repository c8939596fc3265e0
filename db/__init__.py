"""The schema (SQLAlchemy 2 models), how to connect (engine and session factory) and the Alembic
migrations under ``db/migrations``. PostgreSQL in production, SQLite in embedded mode."""
