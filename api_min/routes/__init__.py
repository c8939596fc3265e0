"""One router per resource; ``api_min.app`` mounts them."""
