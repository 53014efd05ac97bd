"""What the released revisions in ``versions/`` share: their frozen SQL, and the data key."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from alembic import op

from cloud_bridge.storage.datakey import DataCipher

__all__ = ["cipher", "run_released"]


def run_released(sqlite: Sequence[str], postgresql: Sequence[str]) -> None:
    """Run a released migration's frozen statements for the dialect at hand."""
    # As the text was run: no parameters, so a % is a percent sign, not a placeholder.
    bind = op.get_bind().execution_options(no_parameters=True)
    statements = postgresql if bind.dialect.name == "postgresql" else sqlite
    for statement in statements:
        if statement.strip():
            bind.exec_driver_sql(statement)


def cipher() -> DataCipher:
    """The store's MAC cipher, for a migration that encrypts (given to :func:`upgrade`)."""
    get: Callable[[], DataCipher] = op.get_context().config.attributes["cipher"]  # type: ignore[union-attr]
    return get()
