"""Search by human attributes: one request model, answered by OpenSearch or by DuckDB over Parquet."""
