"""E2E tier: real ComfyUI server (the session fixture comfy_server lives in tests/conftest.py)."""
