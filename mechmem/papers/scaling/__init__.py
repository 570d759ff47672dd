"""Scaling Laws for Associative Memories (Cabannes, Dohmatob, Bietti, ICLR 2024)."""
