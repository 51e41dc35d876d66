"""Evaluation metrics: image fidelity, VBench-style motion, instruction swaps, learned features."""

from training.metrics.image import psnr, ssim
from training.metrics.motion import MotionScore, motion_score, motion_smoothness
from training.metrics.swap import swap_accuracy

__all__ = ["MotionScore", "motion_score", "motion_smoothness", "psnr", "ssim", "swap_accuracy"]
