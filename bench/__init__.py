"""Benchmarks of oktyv_nb against peers run side by side (SPEC §14)."""
