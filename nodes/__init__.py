"""ComfyUI adapters for the headless ``fye_core``: the only package that imports comfy."""
from comfy_api.v0_0_2 import ComfyExtension, io

from .animate import ANIMATE_NODES
from .crop import CROP_NODES
from .hunyuan import HUNYUAN_NODES
from .landmarks import LANDMARK_NODES
from .models import register_model_folder


class FYEExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.75 never calls on_load; the node list is asked for once, when the pack loads.
        register_model_folder()
        return [*LANDMARK_NODES, *ANIMATE_NODES, *CROP_NODES, *HUNYUAN_NODES]
