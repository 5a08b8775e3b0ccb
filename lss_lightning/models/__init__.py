"""Backbones only (no training logic): U-nets, CNNs, EfficientNets, ViTs for 3D fields."""
