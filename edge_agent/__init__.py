"""passby edge agent: recognises enrolled phones near a store and reports presence."""

__version__ = "0.1.0"
