"""Queue ``gpt`` (CPU): text normalisation, splitting, G2P, BERT phone features and the T2S
autoregressive model that turns phones into semantic tokens."""
