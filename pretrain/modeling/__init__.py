"""Networks: ResNet backbones and projection heads (backbones.py), BatchNorm over sub-batches (split_batchnorm.py)."""
