"""DiffTrack for ComfyUI: temporal correspondence read from the attention of the video DiT you already loaded.

ComfyUI imports this package, then awaits comfy_entrypoint(); the node modules (which import ComfyUI) load
only then, so importing the package itself needs nothing but Python.
"""

WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    from .nodes.extension import DiffTrackExtension

    return DiffTrackExtension()
