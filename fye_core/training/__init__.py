"""Training with the paper's facial fine-grained (FFG) loss: masks, loss, data, the two-stage trainer
(``trainer.Trainer``, imported on use: it needs accelerate) and its checkpoints."""
from .loss import ffg_loss, fye_loss, v_target
from .masks import EXPRESSION_POINTS, expression_mask, face_contour, facial_mask

__all__ = ["EXPRESSION_POINTS", "expression_mask", "face_contour", "facial_mask", "ffg_loss", "fye_loss", "v_target"]
