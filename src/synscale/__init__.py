"""synscale: scaling laws of synthetic images for model training.

`import synscale` stays light: heavy libraries (torch, timm, matplotlib, pandas) are imported by the
modules that need them.
"""

__version__ = "0.1.0"
