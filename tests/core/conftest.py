"""Core tier: torch only, no ComfyUI."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # oracle_scene
