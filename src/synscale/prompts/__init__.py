"""Prompt strategies (the paper's eight), WordNet, CLIP templates, Places scenes and captioners."""
