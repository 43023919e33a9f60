"""Registers the CLI sub-commands that live beside their modules (kept out of cli.py so the
sampler's CLI stays small)."""
