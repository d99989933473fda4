"""The lake: the extract contract, the Parquet store, views over it, phone numbers. A leaf: imports nothing above it."""
