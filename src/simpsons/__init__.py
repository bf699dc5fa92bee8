"""simpsons: recognise characters of The Simpsons in pictures and video.

``import simpsons`` is light: the API below, and the deep-learning backend behind it, load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

__all__ = ["Metrics", "Model", "Prediction", "Timeline", "analyse_video", "evaluate", "load_model", "__version__"]

_API = {"Metrics", "Model", "Timeline", "analyse_video", "evaluate", "load_model"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from simpsons import api

        return getattr(api, name)
    if name == "Prediction":
        from simpsons.prediction import Prediction

        return Prediction
    raise AttributeError(f"module 'simpsons' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
