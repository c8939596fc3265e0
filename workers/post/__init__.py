"""Queue ``post``: denoise, loudness normalisation (ITU-R BS.1770), encoding, storage of the
finished audio and webhook delivery."""
