"""Store: enriched records on disk (SQLite for queries, JSON lines for shippers)."""
