"""Text-to-image generation: the Generator protocol, backends, and the resumable sharded runner."""
