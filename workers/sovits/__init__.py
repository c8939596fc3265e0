"""Queue ``sovits`` (GPU): reference features of a voice (HuBERT → prompt tokens, linear
spectrogram → style) and the SoVITS decoder that turns semantic tokens into a 32 kHz waveform."""
