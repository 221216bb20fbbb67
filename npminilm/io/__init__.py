"""Files: checked safetensors reading, model resolution and fetch, atomic writes."""
