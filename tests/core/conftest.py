"""Core tier: torch only, no ComfyUI."""
