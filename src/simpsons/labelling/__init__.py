"""Labelling video frames into a one-folder-per-character dataset: by hand, model-assisted, and review.

- ``simpsons label VIDEOS... --into DATASET`` (``by_hand``): for each video (shuffled), seek to a random frame in
  the first minutes, then jump a random 100 to 250 frames each time (``plan``); show each frame (``preview``),
  ask where the character is and who it is (``prompts``), save that crop as ``DATASET/<character>/pic_NNNN.jpg``.
- ``--auto`` (``automatic``): cut each frame into left, right and full crops, classify them with one model call
  and put the confident ones in ``DATASET/_review/<character>/`` for a human to check; with ``--detect``, crop
  around each character the detector finds instead.
- ``simpsons label review DATASET`` (``reviewing``): accept, relabel or reject what ``--auto`` left in
  ``_review/``.

Every action is appended to ``DATASET/labels.csv`` (files relative to the dataset); frames already there are
skipped, so a second run resumes. Pictures are claimed with ``O_EXCL`` and written atomically, so two runs into
one dataset never clash (``store``). Frames are read with ``simpsons.frames``.
"""

from simpsons.labelling.automatic import DEFAULT_MIN_PROB, AutoReport, auto_label
from simpsons.labelling.by_hand import label_videos
from simpsons.labelling.plan import DEFAULT_EVERY, DEFAULT_START_WITHIN, frame_plan, parse_every
from simpsons.labelling.preview import Preview, Window, display_available, terminal_graphics, terminal_image
from simpsons.labelling.prompts import Stop, matching_names, normalise_name
from simpsons.labelling.reviewing import accept_crop, reject_crop, review, undo_review
from simpsons.labelling.session import Session, open_session
from simpsons.labelling.store import (LOG_NAME, PICTURE_NAME, REJECTED_DIR, REVIEW_DIR, UNSURE_DIR, VALID_NAME,
                                      LabelLog, UnreadablePicture, character_folders, file_errors, kept_saves,
                                      open_dataset, picture_counts, read_log, relative, remove_if_empty,
                                      reserve_picture, review_items, review_sources, waiting_folder)

__all__ = [
    "DEFAULT_EVERY", "DEFAULT_MIN_PROB", "DEFAULT_START_WITHIN", "LOG_NAME", "PICTURE_NAME", "REJECTED_DIR",
    "REVIEW_DIR", "UNSURE_DIR", "VALID_NAME", "AutoReport", "LabelLog", "Preview", "Session", "Stop",
    "UnreadablePicture", "Window", "accept_crop", "auto_label", "character_folders", "display_available",
    "file_errors", "frame_plan", "kept_saves", "label_videos", "matching_names", "normalise_name", "open_dataset",
    "open_session", "parse_every", "picture_counts", "read_log", "reject_crop", "relative", "remove_if_empty",
    "reserve_picture", "review", "review_items", "review_sources", "terminal_graphics", "terminal_image",
    "undo_review", "waiting_folder",
]
