"""The relational store: one SQLAlchemy 2 async engine on ``APP_DATABASE_URL``, migrated by Alembic."""
