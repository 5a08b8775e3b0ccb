"""lss-lightning: PyTorch Lightning + Hydra for machine learning on cosmological large-scale structure."""

__version__ = "0.1.0"
