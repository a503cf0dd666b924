"""LowDB files as a source: directory watch, safe reads, per-record slices, snapshot diff."""
