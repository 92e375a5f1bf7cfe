"""Models: the tiny random-init preset, local Hugging Face models, LoRA, tokenizers."""

from inweights.models.load import build_tiny, load_model, save_model
from inweights.models.tokenizer import CHAT_TEMPLATE, train_tokenizer

__all__ = ["CHAT_TEMPLATE", "build_tiny", "load_model", "save_model", "train_tokenizer"]
