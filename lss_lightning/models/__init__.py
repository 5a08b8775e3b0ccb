"""Backbones only (no training logic): U-nets for fields, CNN / EfficientNet / ViT / MLP heads for parameters.
Importing the package registers every preset; ``create_model(name, **overrides)`` builds one."""

from lss_lightning.models import cnn, efficientnet, summary_mlp, unet, vit  # noqa: F401 (register presets)
from lss_lightning.models.registry import create_model, list_models, model_config, register_model

__all__ = ["create_model", "list_models", "model_config", "register_model"]
