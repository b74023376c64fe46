"""The tiny CLIP the demo pretrains on synthetic stills: recipe, data, losses, training, evaluation, files.

The command line and the cached `pretrain` entry point are `preprocess/pretrain_tiny_clip.py`.
"""
