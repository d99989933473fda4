"""Ingest: operator extracts into a validated, partitioned Parquet lake."""
