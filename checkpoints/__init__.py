"""Pretrained GQN checkpoints shipped with gqn-rl, installed as package data of
``gqn_rl.checkpoints``: ``<scene family>/checkpoint.pt`` with its ``MODEL_CARD.md``."""
