"""Training with the paper's facial fine-grained (FFG) loss: masks and loss (the trainer is to come)."""
from .loss import ffg_loss, fye_loss, v_target
from .masks import EXPRESSION_POINTS, expression_mask, face_contour, facial_mask

__all__ = ["EXPRESSION_POINTS", "expression_mask", "face_contour", "facial_mask", "ffg_loss", "fye_loss", "v_target"]
