import sys
from pathlib import Path

# the pack is used from its folder (ComfyUI's custom_nodes/<pack>), not installed: import from the root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
