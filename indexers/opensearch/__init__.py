"""OpenSearch: index template and aliases, bulk indexing from Parquet, resumable sync."""
