"""Evaluation metrics: image fidelity, VBench-style motion, instruction swaps, learned features.

PSNR and SSIM come from showme_model.metrics, which the node and planners share.
"""

from showme_model.metrics import psnr, ssim
from training.metrics.motion import MotionScore, motion_score, motion_smoothness
from training.metrics.swap import swap_accuracy

__all__ = ["MotionScore", "motion_score", "motion_smoothness", "psnr", "ssim", "swap_accuracy"]
