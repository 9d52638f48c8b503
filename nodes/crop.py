"""Face crop at the model's resolution and feathered paste-back into the full-resolution portrait."""
import torch
from comfy_api.v0_0_2 import io

from ..fye_core.crop import crop_face, detect_face_crop, paste_back, paste_mask
from ..fye_core.image import images_to_uint8
from .convert import uint8_to_images
from .landmarks import FacePlacementType, FaceTrackType, face_detector

CATEGORY = "FollowYourEmoji"
FaceCropType = io.Custom("FYE_FACE_CROP")


class FaceCrop(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FYE_FaceCrop",
            display_name="FYE Face Crop",
            category=CATEGORY,
            description="Crops the face of a portrait of any size to the model's resolution; FYE Paste Back puts "
                        "the animation back into the full portrait. A box as large as the image gives the "
                        "official 512 letterbox.",
            inputs=[
                io.Image.Input("image", tooltip="The full-resolution portrait (the first image of a batch)."),
                io.Float.Input("margin", default=0.5, min=0.0, max=5.0, step=0.05,
                               tooltip="Space around the face on each side, as a fraction of the face's size."),
                io.Float.Input("aspect", default=1.0, min=0.25, max=4.0, step=0.05,
                               tooltip="Width / height of the crop (1: square, as the model was trained)."),
                io.Int.Input("size", default=512, min=64, max=2048, step=8,
                             tooltip="Height of the crop in pixels (the width follows the aspect)."),
                FacePlacementType.Input("placement", optional=True,
                                        tooltip="From FYE Place Face on this image, for a face MediaPipe cannot "
                                                "find: the box is made around the fitted face."),
            ],
            outputs=[
                io.Image.Output(display_name="face", tooltip="The crop: connect it as the reference."),
                FaceCropType.Output(display_name="crop", tooltip="Where the crop came from, for FYE Paste Back."),
                FaceTrackType.Output(display_name="face_track", tooltip="The landmarks found on the crop."),
            ],
        )

    @classmethod
    def execute(cls, image, margin, aspect, size, placement=None) -> io.NodeOutput:
        portrait = images_to_uint8(image[:1])[0]
        with face_detector("image") as detector:
            crop, track, _, _ = detect_face_crop(portrait, margin, aspect, size, detector=detector,
                                                 placement=placement)
        return io.NodeOutput(uint8_to_images(crop_face(portrait, crop)[None]), crop, track)


class PasteBack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FYE_PasteBack",
            display_name="FYE Paste Back",
            category=CATEGORY,
            description="Puts animated face crops back into the full-resolution portrait with a feathered edge.",
            inputs=[
                io.Image.Input("images", tooltip="The animated crops (FYE Animate)."),
                FaceCropType.Input("crop", tooltip="From FYE Face Crop."),
                io.Image.Input("portrait", tooltip="The full-resolution portrait the crop was made from."),
                io.Int.Input("feather", default=16, min=0, max=256,
                             tooltip="Width in pixels of the blend at the crop's edges inside the portrait."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Full-resolution frames."),
                io.Mask.Output(display_name="mask", tooltip="Where the animation replaces the portrait."),
            ],
        )

    @classmethod
    def execute(cls, images, crop, portrait, feather) -> io.NodeOutput:
        frames = paste_back(images_to_uint8(images), images_to_uint8(portrait[:1])[0], crop, feather)
        mask = torch.from_numpy(paste_mask(crop, feather))[None]
        return io.NodeOutput(uint8_to_images(frames), mask)


CROP_NODES = (FaceCrop, PasteBack)
