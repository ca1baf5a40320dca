"""Shared Alembic environment: runs one service's migrations inside its own schema."""

from alembic import context
from sqlalchemy import create_engine, text

config = context.config
schema: str = config.attributes["schema"]
url: str = config.attributes["url"]

engine = create_engine(url)
with engine.connect() as connection:
    # Two processes migrating at once must not interleave: the first one does the work.
    connection.execute(text("SELECT pg_advisory_lock(hashtext('paymesh-migrate'))"))
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    connection.execute(text(f'SET search_path TO "{schema}", public'))
    connection.commit()
    context.configure(
        connection=connection,
        version_table_schema=schema,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
    connection.execute(text("SELECT pg_advisory_unlock(hashtext('paymesh-migrate'))"))
    connection.commit()
engine.dispose()
