"""Generator backends: a GPT that answers when the encoder is unsure."""
