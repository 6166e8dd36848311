"""ComfyUI side of the pack: the hook layer, one adapter per video-DiT family, and the nodes."""
