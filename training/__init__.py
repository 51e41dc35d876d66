"""Two-stage ShowMe training, data preparation and evaluation."""
