"""Host tier: real ComfyUI model classes at tiny sizes, on CPU (or GPU where present)."""
import sys
from pathlib import Path

import hostlib

sys.path.insert(0, str(Path(__file__).resolve().parent))  # qk_references
hostlib.load_host()
