"""The three worker pools, one per queue: ``gpt`` (text → semantic tokens, CPU), ``sovits``
(voice features and semantic tokens → waveform, GPU) and ``post`` (audio finishing, storage,
callbacks). Model code lives in each pool's ``model/`` and imports torch/numpy only."""
