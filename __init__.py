"""Follow-Your-Emoji for ComfyUI. ComfyUI imports this file; the nodes load when it asks for them."""


async def comfy_entrypoint():
    from .nodes import FYEExtension

    return FYEExtension()
