"""Skeleton data: layouts, sequences, transforms, readers, Parquet shards."""
