"""Maths on periodic grids: torch tensors shaped (C, N, N, N), on CPU or GPU."""
