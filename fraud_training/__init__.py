"""Training: the LightGBM champion, the int8 MLP challenger, their evaluation."""
