"""Backbones only (no training logic): U-nets for fields, CNN / EfficientNet / ViT / MLP heads for parameters.
``create_model(name, **overrides)`` builds any preset of the one registry (``models.registry``)."""

from lss_lightning.models.registry import create_model, list_models, model_config, register_model

__all__ = ["create_model", "list_models", "model_config", "register_model"]
