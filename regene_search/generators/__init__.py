"""Generators of classifier latents beyond ReGene's convex combinations (issue 14).

- `gaussian`: one full-covariance Gaussian per class (Ledoit–Wolf shrinkage), samples kept in the
  latent activation's domain.
- `lsdm`: a class-conditional generator G(noise, class) -> latent trained by WGAN-GP on the joint
  (latent, class) distribution (LSDM's second stage).
- `lr_livae`: a label-irrelevant VAE code z_u beside the classifier latent z_s, decoded together.
"""
