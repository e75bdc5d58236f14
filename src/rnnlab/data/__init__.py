"""Data for the training tools: text files, the vocabulary, the default Shakespeare corpus."""
from .shakespeare import WORKS, load_shakespeare
from .text import Vocabulary, corpus_digest, read_text, split_documents

__all__ = ["Vocabulary", "read_text", "corpus_digest", "split_documents", "load_shakespeare", "WORKS"]
