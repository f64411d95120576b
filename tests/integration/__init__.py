"""Real-ComfyUI integration harness: server process, tiny checkpoints, UI -> API workflow conversion."""
