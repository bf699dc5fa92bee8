"""simpsons: recognise characters of The Simpsons in images and video."""

__version__ = "0.1.0"
