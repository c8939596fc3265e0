"""GPT-SoVITS v2 text frontend: segmenting, language split, normalisation, G2P to the 732
v2 phone ids, and phone-level BERT features (``workers.gpt.text.bert``, imported separately
because it pulls in torch/transformers).

Entry points: :func:`segment_spans` to cut long input into segments (exact slices of it),
:func:`readings` / :func:`spoken` for how a slice is read aloud, :func:`text_to_phones` for one
segment's spoken form.
"""

from workers.gpt.text.frontend import ChunkPhones, PhonemizedText, clean_chunk, text_to_phones
from workers.gpt.text.langsplit import LangChunk, split_languages
from workers.gpt.text.reading import Replacement, readings, spoken
from workers.gpt.text.segment import Span, SplitMethod, cut_text, segment_spans, split_text
from workers.gpt.text.symbols import SYMBOL_TO_ID, SYMBOLS, cleaned_text_to_sequence

__all__ = [
    "SYMBOLS",
    "SYMBOL_TO_ID",
    "ChunkPhones",
    "LangChunk",
    "PhonemizedText",
    "Replacement",
    "Span",
    "SplitMethod",
    "clean_chunk",
    "cleaned_text_to_sequence",
    "cut_text",
    "readings",
    "segment_spans",
    "spoken",
    "split_languages",
    "split_text",
    "text_to_phones",
]
