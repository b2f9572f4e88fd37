"""ImageNet-style classification on timm: yacs config, data, engine, checkpoints, train/test CLIs, demo data."""
