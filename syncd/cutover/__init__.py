"""Cutover per LowDB file: parity (verify), modes (state), the reverse path, backup and restore."""
