"""The tiny backbone the demo pretrains on synthetic stills, for any registered backbone with a tiny recipe
(backbones.py: CLIP, BLIP): recipe, vocabulary, data, losses, training, evaluation, files.

The command line and the cached `pretrain` entry point are `preprocess/pretrain_tiny_clip.py --backbone NAME`.
"""
