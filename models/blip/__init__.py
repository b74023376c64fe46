"""BLIP (Li et al., 2022) image-text retrieval as a backbone: model, loading, tokenizer and FLOP counts."""
from .config import BlipConfig
from .formats import BlipLoadError, Overrides
from .loading import BlipTemperatureWarning, load_blip
from .model import BlipRetrieval
from .tokenizer import CAPTION_LENGTH, BlipTokenizer, blip_tokenizer
from .vision import BLIP_MEAN, BLIP_STD

__all__ = ["BLIP_MEAN", "BLIP_STD", "CAPTION_LENGTH", "BlipConfig", "BlipLoadError", "BlipRetrieval",
           "BlipTemperatureWarning", "BlipTokenizer", "Overrides", "blip_tokenizer", "load_blip"]
