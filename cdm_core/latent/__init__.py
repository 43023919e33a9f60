"""Autoencoder latent spaces: the same sampler run on a trained encoder's training latents."""
