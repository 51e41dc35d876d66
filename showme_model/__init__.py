"""ShowMe model library: one video diffusion model for goal images and rollout videos."""
