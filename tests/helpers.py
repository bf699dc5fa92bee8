"""Pictures derived from the samples with Pillow, and small model bundles, for the tests."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = REPO_ROOT / "samples"
TEST_CHARACTERS = [
    "abraham_grampa_simpson", "apu_nahasapeemapetilon", "bart_simpson", "charles_montgomery_burns", "chief_wiggum",
    "comic_book_guy", "edna_krabappel", "homer_simpson", "kent_brockman", "krusty_the_clown", "lenny_leonard",
    "lisa_simpson", "marge_simpson", "mayor_quimby", "milhouse_van_houten", "moe_szyslak", "ned_flanders",
    "nelson_muntz", "principal_skinner", "sideshow_bob",
]


# --------------------------------------------------------------------------- images derived from the samples


def drawn_png(path: Path) -> Image.Image:
    """The PNG picture at ``path``, checked to be a PNG with something drawn on it (not one flat colour)."""
    with Image.open(path) as image:
        assert image.format == "PNG", path
        picture = image.convert("RGB")
    low, high = zip(*picture.getextrema())
    assert min(low) < max(high), f"{path} is one flat colour"
    return picture


def character_of(path: Path) -> str:
    """``homer_simpson_2.jpg`` -> ``homer_simpson``."""
    return path.stem.rsplit("_", 1)[0]


def open_sample(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def brighter(image: Image.Image, factor: float = 1.03) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


def resaved(image: Image.Image, quality: int = 75) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as reopened:
        return reopened.convert("RGB")


def variants(image: Image.Image) -> list[Image.Image]:
    """Four different-looking pictures from one frame: itself, mirrored, cropped, darker."""
    width, height = image.size
    return [
        image,
        ImageOps.mirror(image),
        image.crop((width // 10, height // 10, width, height)),
        ImageEnhance.Brightness(image).enhance(0.8),
    ]


def copy_samples_as_folders(sample_paths: list[Path], root: Path, characters: list[str] | None = None) -> Path:
    """The samples rearranged in the one-folder-per-character layout."""
    for path in sample_paths:
        character = character_of(path)
        if characters is not None and character not in characters:
            continue
        (root / character).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / character / f"pic_{path.stem.rsplit('_', 1)[1]}.jpg")
    return root


def build_training_folder(sample_paths: list[Path], root: Path, characters: list[str]) -> Path:
    """A folder-layout training set: 3 samples x 4 variants = 12 images per character."""
    for character in characters:
        (root / character).mkdir(parents=True)
        number = 0
        for path in sample_paths:
            if character_of(path) != character:
                continue
            for picture in variants(open_sample(path)):
                picture.save(root / character / f"pic_{number:04d}.jpg", quality=90)
                number += 1
    return root


# --------------------------------------------------------------------------- small model bundles


def make_bundle(path: Path, characters: list[str], image_size: int = 32, threshold: float | None = None, seed: int = 0):
    """Save an (untrained) ``article_cnn`` classifier as a bundle; returns the Bundle."""
    import keras

    from simpsons.bundle import Bundle, save_bundle
    from simpsons.models import build_article_cnn

    keras.utils.set_random_seed(seed)
    bundle = Bundle(
        model=build_article_cnn(len(characters), image_size), characters=list(characters), image_size=image_size,
        threshold=threshold, metadata={"arch": "article_cnn", "note": "made by the tests", "metrics": {"accuracy": 0.5}},
    )
    save_bundle(bundle, path)
    return bundle
