"""GPT-SoVITS v2 text frontend: segmenting, language split, normalisation, G2P to the 732
v2 phone ids, and phone-level BERT features (``workers.gpt.text.bert``, imported separately
because it pulls in torch/transformers).

Entry points: :func:`text_to_phones` for one segment, :func:`split_text` to cut long input
into segments first.
"""

from workers.gpt.text.frontend import ChunkPhones, PhonemizedText, clean_chunk, text_to_phones
from workers.gpt.text.langsplit import LangChunk, split_languages
from workers.gpt.text.segment import SplitMethod, cut_text, split_text
from workers.gpt.text.symbols import SYMBOL_TO_ID, SYMBOLS, cleaned_text_to_sequence

__all__ = [
    "SYMBOLS",
    "SYMBOL_TO_ID",
    "ChunkPhones",
    "LangChunk",
    "PhonemizedText",
    "SplitMethod",
    "clean_chunk",
    "cleaned_text_to_sequence",
    "cut_text",
    "split_languages",
    "split_text",
    "text_to_phones",
]
