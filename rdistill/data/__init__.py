"""Paired data: schema, loading, sources, tokenizing, curricula, packing and the PackedBatch."""
