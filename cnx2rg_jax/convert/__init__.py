"""Converters of released PyTorch weights into files that cnx2rg-jax reads without torch."""
