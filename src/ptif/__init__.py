"""ptif: tiled pyramid TIFFs for IIIF image servers, from images in an object store."""

__version__ = "0.1.0"
