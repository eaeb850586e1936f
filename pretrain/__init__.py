"""Contrastive pretraining with conditional negative sampling (Ring / CNCE)."""
__version__ = "0.1.0"
