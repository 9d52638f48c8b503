"""ComfyUI adapters for the headless ``fye_core``: the only package that imports comfy."""
from comfy_api.latest import ComfyExtension, io

from .landmarks import LANDMARK_NODES
from .models import register_model_folder


class FYEExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_model_folder()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(LANDMARK_NODES)
