"""``simpsons serve``: a web page and a JSON API over the one ``Predictor`` (and a ``Detector``, when the
server has one).

Pictures (the answer, the top 5, an occlusion heat map and the detector's boxes), clips (a background job
with progress, then the timeline chart and the screen time), the review of the crops ``label --auto`` left in
``DATASET/_review/`` (through ``labelling``'s own accept, reject and undo, so it matches ``label review``),
and an About panel. Uploads are streamed to files the server names itself and refused as soon as they
pass their size limit; the page and its scripts are served from the package.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import shutil
import socket
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal, get_args

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from simpsons import labelling
from simpsons import video as videos
from simpsons.bundle import Bundle
from simpsons.data import open_rgb
from simpsons.detection.bundle import DetectorBundle, describe_detector
from simpsons.detection.detector import DEFAULT_MIN_PROBABILITY, TRAIN_A_DETECTOR, Detector, detector_path
from simpsons.errors import ParameterError, SimpsonsError
from simpsons.frames import probe
from simpsons.prediction import Predictor, Scores
from simpsons.timeline import Segment, screen_time

MB = 1024 * 1024
DEFAULT_PICTURE_LIMIT = 20 * MB
DEFAULT_CLIP_LIMIT = 500 * MB
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and part headers around the file itself
MAX_PIXELS = 50_000_000  # a small PNG can unpack to gigabytes: refuse pictures over 50 megapixels
TOP_K = 5
HEATMAP_STEPS = 7  # occluding squares per side: 49 occluded copies in one batch
HEATMAP_CELLS = 32  # the heat map's resolution in the answer
KEPT_JOBS = 20
CLIP_NAME = "clip"
JobFile = Literal["chart.png", "timeline.json", "subtitles.srt", "annotated.mp4"]
JOB_FILES = get_args(JobFile)
STATIC = Path(__file__).with_name("web_static")
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'")
NO_DETECTOR = (f"this server has no detector: start it with `simpsons serve --detector BUNDLE` ({TRAIN_A_DETECTOR}: "
               "RUN/detector.simpsons)")
log = logging.getLogger("simpsons.web")


# --------------------------------------------------------------------------- the model, shared by all requests


class ModelThread:
    """One thread that runs a model's batch function, gathering the rows of concurrent requests into one call."""

    def __init__(self, run: Callable[[np.ndarray], Any], batch_size: int, name: str):
        self.run, self.batch_size = run, batch_size
        self._waiting: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def answer(self, pixels: np.ndarray) -> Any:
        """``run(pixels)``, computed on the model thread together with other requests' rows."""
        done: Future = Future()
        self._waiting.put((pixels, done))
        return done.result()

    def close(self) -> None:
        """Stop the thread once the requests already waiting are answered."""
        self._waiting.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (job := self._waiting.get()) is not None:
            jobs = [job]
            rows = len(job[0])
            while rows < self.batch_size and not self._waiting.empty():
                job = self._waiting.get()
                if job is None:
                    self._waiting.put(None)
                    break
                jobs.append(job)
                rows += len(job[0])
            self._answer(jobs)

    def _answer(self, jobs: list[tuple[np.ndarray, Future]]) -> None:
        try:
            rows = self.run(np.concatenate([pixels for pixels, _ in jobs]))
        except Exception as error:  # handed to each waiting request
            for _, done in jobs:
                done.set_exception(error)
            return
        start = 0
        for pixels, done in jobs:
            done.set_result(rows[start : start + len(pixels)])
            start += len(pixels)


class BatchingPredictor(Predictor):
    """A ``Predictor`` whose model runs on one thread, gathering concurrent requests into one batch."""

    def __init__(self, bundle: Bundle, batch_size: int = 64):
        super().__init__(bundle, batch_size)
        self._model = ModelThread(super().score, batch_size, "simpsons-model")

    def score(self, pixels: np.ndarray) -> Scores:
        """Like ``Predictor.score``, computed on the model thread together with other requests."""
        return self._model.answer(pixels)

    def warm_up(self) -> None:
        """Trace the network for the first batch sizes now rather than in the first requests (~0.4 s each)."""
        for rows in (1, 2, 3):
            self.score(np.zeros((rows, self.image_size, self.image_size, 3), np.uint8))

    def close(self) -> None:
        """Stop the model thread once the requests already waiting are answered."""
        self._model.close()


class BatchingDetector(Detector):
    """A ``Detector`` whose network runs on one thread, gathering concurrent requests into one batch."""

    def __init__(self, bundle: DetectorBundle, batch_size: int = 16):
        super().__init__(bundle, batch_size)
        self._model = ModelThread(super().outputs, batch_size, "simpsons-detector")

    def outputs(self, pixels: np.ndarray) -> np.ndarray:
        """Like ``Detector.outputs``, computed on the detector's thread together with other requests."""
        return self._model.answer(pixels)

    def close(self) -> None:
        """Stop the detector's thread once the requests already waiting are answered."""
        self._model.close()


# --------------------------------------------------------------------------- pictures


def occluding_boxes(side: int, steps: int = HEATMAP_STEPS) -> list[tuple[int, int, int]]:
    """``(top, left, size)`` of grey squares sweeping the picture, each overlapping its neighbours by half."""
    size = max(1, 2 * side // (steps + 1))
    starts = np.linspace(0, side - size, steps).round().astype(int)
    return [(int(top), int(left), size) for top in starts for left in starts]


def occluded_copies(pixels: np.ndarray, boxes: list[tuple[int, int, int]]) -> np.ndarray:
    """The picture followed by one copy per box, greyed out under the box."""
    copies = np.repeat(pixels[None], len(boxes) + 1, axis=0)
    for copy, (top, left, size) in zip(copies[1:], boxes):
        copy[top : top + size, left : left + size] = 128
    return copies


def heat_grid(scores: np.ndarray, boxes: list[tuple[int, int, int]], side: int) -> list[list[float]]:
    """Occlusion sensitivity: the answer's probability drop under each box, averaged per pixel, 0..1."""
    total = np.zeros((side, side), np.float32)
    for drop, (top, left, size) in zip(np.clip(scores[0] - scores[1:], 0, None), boxes):
        total[top : top + size, left : left + size] += drop
    covered = np.zeros((side, side), np.float32)
    for top, left, size in boxes:
        covered[top : top + size, left : left + size] += 1
    heat = Image.fromarray(total / np.maximum(covered, 1), "F").resize((HEATMAP_CELLS, HEATMAP_CELLS),
                                                                        Image.Resampling.BILINEAR)
    grid = np.clip(np.asarray(heat, np.float64), 0, None)
    peak = grid.max()
    return np.round(grid / peak if peak > 0 else grid, 3).tolist()


def answer_picture(predictor: Predictor, image: Image.Image, heatmap: bool) -> dict[str, Any]:
    """``predict --json``'s answer with the top 5; with ``heatmap``, where the model looked (one model call)."""
    pixels = predictor.prepare(image)
    boxes = occluding_boxes(pixels.shape[0]) if heatmap else []
    scores = predictor.score(occluded_copies(pixels, boxes))
    picture = scores[:1]
    prediction = predictor.decide(picture.probabilities, top_k=TOP_K, familiarity=picture.familiarity)[0]
    answer = {**prediction.as_dict(), "width": image.width, "height": image.height}
    if heatmap:
        column = predictor.characters.index(prediction.best_guess)
        answer["heatmap"] = heat_grid(scores.probabilities[:, column], boxes, pixels.shape[0])
    return answer


def read_picture(file: BinaryIO) -> Image.Image:
    """The uploaded picture in RGB: 415 for what Pillow cannot read, 413 past ``MAX_PIXELS``."""
    try:
        with Image.open(file) as probe:
            pixels = probe.width * probe.height
    except Image.DecompressionBombError:
        pixels = MAX_PIXELS + 1
    except Exception as error:  # Pillow's decoders raise many kinds of error on foreign bytes
        raise not_a_picture(error) from None
    if pixels > MAX_PIXELS:
        raise HTTPException(413, f"the picture has more than {MAX_PIXELS // 1_000_000} megapixels")
    file.seek(0)
    try:
        return open_rgb(file)
    except Exception as error:
        raise not_a_picture(error) from None


def not_a_picture(error: Exception) -> HTTPException:
    """415 naming the decoder's complaint."""
    return HTTPException(415, f"not a picture Pillow can read ({type(error).__name__}): send a JPEG, PNG, GIF, "
                              "BMP or WebP file")


# --------------------------------------------------------------------------- the detector's boxes


class ServedDetector:
    """The server's detector, if any: its bundle checked at start-up, its network loaded by the first detection
    (on a worker thread), so that a server nobody asks for boxes never loads Keras."""

    def __init__(self, path: Path | None, unavailable: str = NO_DETECTOR):
        self.path = path
        self.description = describe_detector(path) if path is not None else None
        self.unavailable = unavailable
        self._detector: BatchingDetector | None = None
        self._lock = threading.Lock()

    def about(self) -> dict[str, Any] | None:
        """What ``/api/about`` says of the detector: its characters and default threshold (``None``: none)."""
        if self.description is None:
            return None
        return {"model": str(self.path), "characters": list(self.description["characters"]),
                "image_size": self.description["image_size"], "min_probability": DEFAULT_MIN_PROBABILITY}

    def check(self) -> None:
        """404 with how to get a detector when the server has none."""
        if self.path is None:
            raise HTTPException(404, self.unavailable)

    def get(self) -> BatchingDetector:
        """The detector, its network loaded at the first call; 404 without one, 500 when it cannot be loaded."""
        self.check()
        with self._lock:
            if self._detector is None:
                try:
                    self._detector = BatchingDetector.load(self.path)
                except SimpsonsError as error:
                    raise HTTPException(500, str(error)) from None
            return self._detector

    def close(self) -> None:
        """Stop the detector's thread, if its network was loaded."""
        with self._lock:
            if self._detector is not None:
                self._detector.close()
                self._detector = None


def served_detector(detector: str | Path | Literal[False] | None) -> ServedDetector:
    """The detector bundle or ONNX export at ``detector``; ``None``: the shipped one when the install has it;
    ``False``: none. ``SimpsonsError`` for a file given that is not a detector."""
    if detector is False:
        return ServedDetector(None)
    try:
        return ServedDetector(detector_path(detector, option="--detector"))
    except SimpsonsError:
        if detector is not None:
            raise
        return ServedDetector(None)  # no shipped detector: /api/detect says how to get one


def answer_detections(detector: Detector, image: Image.Image, min_probability: float) -> dict[str, Any]:
    """``detect --json``'s answer for one picture: its boxes in its own pixels, most probable first, and its size."""
    found = detector.detect_images([image], min_probability)[0]
    return {"detections": [detection.as_dict() for detection in found], "width": image.width,
            "height": image.height}


def detect_upload(served: ServedDetector, file: BinaryIO, min_probability: float) -> dict[str, Any]:
    """The uploaded picture's detections; the picture is read before the detector is loaded."""
    image = read_picture(file)
    return answer_detections(served.get(), image, min_probability)


# --------------------------------------------------------------------------- uploads


class _TooLarge(Exception):
    """The request body went past the upload limit."""


async def _capped(stream: AsyncIterator[bytes], cap: int) -> AsyncIterator[bytes]:
    """The request body, raising ``_TooLarge`` (and so reading no further) once it passes ``cap`` bytes."""
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > cap:
            raise _TooLarge
        yield chunk


async def receive_upload(request: Request, limit: int, what: str) -> UploadFile:
    """The form's ``file`` part in a temporary file; 413 past ``limit``, 415/422 for other bodies.

    The client's file name is never used.
    """
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise HTTPException(415, f"send the {what} as multipart/form-data in a field named 'file'")
    too_large = HTTPException(413, f"the {what} is larger than the limit of {limit / MB:g} MB")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise too_large
    body = _capped(request.stream(), limit + FORM_OVERHEAD)
    try:
        form = await MultiPartParser(request.headers, body, max_files=1, max_fields=16).parse()
    except _TooLarge:
        raise too_large from None
    except MultiPartException as error:
        raise HTTPException(422, f"not a readable multipart form: {error.message}") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise HTTPException(422, f"no {what} in the form: send it as a file in a field named 'file'")
    if (upload.size or 0) > limit:
        await form.close()
        raise too_large
    return upload


def upload_body(what: str) -> dict[str, Any]:
    """The OpenAPI request body of an upload (the endpoints read the stream themselves)."""
    schema = {"type": "object", "required": ["file"],
              "properties": {"file": {"type": "string", "format": "binary", "description": what}}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def store(file: BinaryIO, target: Path) -> None:
    """Copy an uploaded file to ``target`` (a name the server chose)."""
    file.seek(0)
    with open(target, "xb") as out:
        shutil.copyfileobj(file, out, MB)


# --------------------------------------------------------------------------- clips


@dataclass
class VideoJob:
    """One uploaded clip: its folder, how far the analysis is, and then its results or error."""

    id: str
    folder: Path
    options: videos.Options
    annotate: bool
    status: Literal["queued", "running", "done", "failed"] = "queued"
    expected: int = 1
    classified: int = 0
    error: str | None = None
    result: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The status, the share of the frames classified and, once done, the results."""
        progress = 1.0 if self.status == "done" else min(0.99, self.classified / self.expected)
        stage = "classifying frames" if progress < 0.99 else "writing the files"
        return {"id": self.id, "status": self.status, "stage": stage if self.status == "running" else self.status,
                "progress": round(progress, 3), "error": self.error, "result": self.result}


class _JobPredictor(Predictor):
    """The server's predictor as a video job sees it: counts the frames classified; stops with the server."""

    def __init__(self, shared: Predictor, job: VideoJob, crops: int, stopping: threading.Event):
        super().__init__(shared.bundle, shared.batch_size)
        self.shared, self.job, self.crops, self.stopping = shared, job, crops, stopping

    def score(self, pixels: np.ndarray) -> Scores:
        """The shared predictor's answer, counted; ``SimpsonsError`` once the server is stopping."""
        if self.stopping.is_set():
            raise SimpsonsError("the server stopped before the analysis ended")
        rows = self.shared.score(pixels)
        self.job.classified += len(pixels) // self.crops
        return rows


def screen_time_rows(segments: list[Segment], duration: float) -> list[dict[str, Any]]:
    """The screen-time table: seconds, share of the clip, segments and mean probability per character."""
    rows = []
    for name, seconds in screen_time(segments).items():
        mine = [s for s in segments if s.character == name]
        mean = sum(s.mean_probability * s.duration for s in mine) / max(seconds, 1e-9)
        rows.append({"character": name, "seconds": round(seconds, 2), "share": round(seconds / duration, 4)
                     if duration else None, "segments": len(mine), "mean_probability": round(mean, 4)})
    return rows


def analyse_clip(predictor: Predictor, job: VideoJob, model: str, stopping: threading.Event) -> None:
    """The job's analysis with ``video.process_video``: its files in the job's folder, then the results."""
    job.status = "running"
    clip = job.folder / CLIP_NAME
    outputs = videos.Outputs(timeline=job.folder / "timeline.json", srt=job.folder / "subtitles.srt",
                             chart=job.folder / "chart.png",
                             video=job.folder / "annotated.mp4" if job.annotate else None)
    try:
        counting = _JobPredictor(predictor, job, len(job.options.crops), stopping)
        result, _ = videos.process_video(clip, counting, job.options, outputs, model, progress=False)
        info = dataclasses.replace(result.info, path=CLIP_NAME)
        files = {name: f"/api/videos/{job.id}/{name}" for name in JOB_FILES if (job.folder / name).is_file()}
        job.result = {"video": info.as_dict(), "seconds": round(result.seconds, 2), "files": files,
                      "screen_time": screen_time_rows(result.segments, info.duration),
                      "segments": [segment.as_dict() for segment in result.segments]}
        job.status = "done"
    except SimpsonsError as error:
        job.error, job.status = str(error).replace(str(clip), "the clip").replace(str(job.folder), "the job"), "failed"
    except Exception as error:  # reported in the job; the server goes on
        log.exception("video job %s failed", job.id)
        job.error, job.status = f"the analysis failed ({type(error).__name__})", "failed"
    finally:
        clip.unlink(missing_ok=True)


# --------------------------------------------------------------------------- review


class ReviewAction(BaseModel):
    """What to do with one crop waiting for review."""

    action: Literal["accept", "relabel", "reject"]
    name: str | None = Field(None, max_length=100, description="relabel: a character name or a unique part of it")
    create: bool = Field(False, description="relabel: create the character folder when no name matches")


def inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (links followed) lies within ``root``."""
    return path.resolve().is_relative_to(root.resolve())


def review_picture(root: Path, folder: str, name: str) -> Path:
    """The crop ``_review/<folder>/<name>``: 404 unless it is a waiting picture inside the dataset."""
    review = root / labelling.REVIEW_DIR
    path = review / folder / name
    if not labelling.waiting_folder(folder) or not labelling.PICTURE_NAME.match(name) or not inside(review, path) \
            or not path.is_file():
        raise HTTPException(404, "no such crop waiting for review")
    return path


def known_names(root: Path, characters: list[str]) -> set[str]:
    """Names a relabel may use: the character folders, the review folders and the model's characters."""
    waiting = {folder for folder, _ in labelling.review_items(root) if folder != labelling.UNSURE_DIR}
    return set(labelling.character_folders(root)) | waiting | set(characters)


def resolve_name(text: str, known: set[str], create: bool) -> str:
    """A relabel answer as one character name, as ``label review`` resolves it (``burns``, ``Mr Burns``)."""
    if not text.strip():
        raise HTTPException(422, "a relabel needs a name")
    matches = labelling.matching_names(text, known)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise HTTPException(422, f"'{text}' is ambiguous: {', '.join(matches)}")
    name = labelling.normalise_name(text)
    if not labelling.VALID_NAME.match(name):
        raise HTTPException(422, f"'{text}' is not a valid name: use letters, digits and underscores")
    if not create:
        raise HTTPException(409, f"no character matches '{text}': confirm to create the character {name}")
    return name


def review_listing(root: Path, characters: list[str]) -> dict[str, Any]:
    """The crops waiting for review, the pictures per character and the names to complete."""
    items = [{"folder": folder, "name": path.name, "url": f"/api/review/{folder}/{path.name}"}
             for folder, path in labelling.review_items(root)]
    return {"items": items, "counts": labelling.picture_counts(root),
            "names": sorted(known_names(root, characters))}


@contextmanager
def dataset_errors(root: Path) -> Iterator[None]:
    """A failed move or log write (500) or an unreadable crop (422) as an HTTP error naming no server folder."""
    try:
        with labelling.file_errors(root):
            yield
    except labelling.UnreadablePicture:
        raise HTTPException(422, "the crop is not a readable picture") from None
    except SimpsonsError as error:
        raise HTTPException(500, str(error).replace(str(root), "the dataset")) from None


def review_target(root: Path, path: Path, action: ReviewAction, characters: list[str]) -> str | None:
    """The character an action files the crop under (``None``: rejected); 422 for an unsure crop accepted
    or a character folder leading outside the dataset."""
    if action.action == "reject":
        return None
    if action.action == "accept" and path.parent.name == labelling.UNSURE_DIR:
        raise HTTPException(422, "an unsure crop has no suggestion: relabel or reject it")
    name = path.parent.name if action.action == "accept" else resolve_name(
        action.name or "", known_names(root, characters), action.create)
    if not inside(root, root / name):
        raise HTTPException(422, f"the character folder {name} leads outside the dataset")
    return name


def file_crop(session: labelling.Session, path: Path, name: str | None, relabelled: bool) -> tuple[Path, Path | None]:
    """``labelling``'s accept (``name``) or reject (``None``) with the crop's ``--auto`` row as its origin:
    where the crop went and, for a refused near-duplicate, the picture it repeats."""
    source = labelling.review_sources(session.root).get(labelling.relative(session.root, path))
    if name is None:
        label = "" if path.parent.name == labelling.UNSURE_DIR else path.parent.name
        return labelling.reject_crop(session, path, label, source), None
    return labelling.accept_crop(session, path, name, source, relabelled=relabelled)


def review_message(root: Path, target: Path, duplicate: Path | None) -> str:
    """What the page says after an action, in ``label review``'s words."""
    where = labelling.relative(root, target)
    if duplicate is not None:
        return f"not accepted: a near-duplicate of {labelling.relative(root, duplicate)} (moved to {where})"
    if target.parent.name == labelling.REJECTED_DIR:
        return f"rejected: kept in {where}"
    return f"moved to {where}"


def apply_review(session: labelling.Session, path: Path, action: ReviewAction,
                 characters: list[str]) -> dict[str, Any]:
    """Accept, relabel or reject one crop with ``labelling``'s own moves and log rows, as ``label review``:
    a near-duplicate accept is refused (the crop goes to ``_review/_rejected/``) and said so."""
    root = session.root
    name = review_target(root, path, action, characters)
    with dataset_errors(root):
        target, duplicate = file_crop(session, path, name, action.action == "relabel")
    labelling.remove_if_empty(path.parent)
    return {"moved_to": labelling.relative(root, target),
            "duplicate_of": None if duplicate is None else labelling.relative(root, duplicate),
            "message": review_message(root, target, duplicate), **review_listing(root, characters)}


def undo_last(session: labelling.Session, characters: list[str]) -> dict[str, Any]:
    """Put the last crop reviewed on this server back where it waited; 409 when there is nothing to undo."""
    with dataset_errors(session.root):
        back = labelling.undo_review(session)
    if back is None:
        raise HTTPException(409, "nothing to undo")
    return {"restored": {"folder": back.parent.name, "name": back.name},
            "message": f"undone: {labelling.relative(session.root, back)} is waiting again",
            **review_listing(session.root, characters)}


# --------------------------------------------------------------------------- the application


@dataclass
class ServerState:
    """What the routes share: the predictor, the detector, the settings, the clip jobs and the folders."""

    predictor: BatchingPredictor
    detector: ServedDetector
    model: str
    dataset: Path | None
    picture_limit: int
    clip_limit: int
    work: Path
    jobs: OrderedDict[str, VideoJob] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    analyses: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "simpsons-video"))
    stopping: threading.Event = field(default_factory=threading.Event)
    reviewing: labelling.Session | None = None

    def new_job(self, options: videos.Options, annotate: bool) -> VideoJob:
        """A job with a fresh folder; the oldest finished jobs beyond ``KEPT_JOBS`` are forgotten."""
        job = VideoJob(uuid.uuid4().hex, self.work / "videos" / uuid.uuid4().hex, options, annotate)
        job.folder.mkdir(parents=True)
        with self.lock:
            self.jobs[job.id] = job
            finished = [j for j in self.jobs.values() if j.status in ("done", "failed")]
            for old in finished[: max(0, len(self.jobs) - KEPT_JOBS)]:
                self.forget(old)
        return job

    def forget(self, job: VideoJob) -> None:
        self.jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    def job(self, job_id: str) -> VideoJob:
        found = self.jobs.get(job_id)
        if found is None:
            raise HTTPException(404, "no such video job")
        return found

    def review_root(self) -> Path:
        if self.dataset is None:
            raise HTTPException(404, "the review panel needs the server started with --dataset DIR")
        return self.dataset

    def review_session(self) -> labelling.Session:
        """The one review session (log, near-duplicate hashes, undo history) of this server, opened at the
        first review action; call it with ``lock`` held."""
        if self.reviewing is None:
            root = self.review_root()
            with dataset_errors(root):
                self.reviewing = labelling.open_session(root)
        return self.reviewing

    def close_review(self) -> None:
        """Close the review session (its log), if one was opened."""
        with self.lock:
            if self.reviewing is not None:
                self.reviewing.close()
                self.reviewing = None


def server_state(request: Request) -> ServerState:
    return request.app.state.simpsons


State = Annotated[ServerState, Depends(server_state)]
JobId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$")]
router = APIRouter()
UPLOAD_ERRORS = {413: {"description": "over the size limit"}, 415: {"description": "not a picture or video"},
                 422: {"description": "not a multipart form with a file"}}


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/healthz")
def healthz(state: State) -> dict[str, Any]:
    """The server is up and its model loaded."""
    return {"status": "ok", "characters": len(state.predictor.characters)}


@router.get("/api/characters")
def characters(state: State) -> dict[str, Any]:
    """The model's characters, in its output order, with their thresholds."""
    return {"characters": [{"name": name, "threshold": state.predictor.threshold_for(name)}
                           for name in state.predictor.characters]}


@router.get("/api/about")
def about(state: State) -> dict[str, Any]:
    """The model (architecture, input size, thresholds, stranger detector, mirror image, prior correction,
    test metrics from its bundle), the detector (``null`` when the server has none) and the server's limits."""
    bundle = state.predictor.bundle
    return {"model": state.model, "arch": bundle.metadata.get("arch"), "image_size": bundle.image_size,
            "recipe": (bundle.metadata.get("recipe") or {}).get("name"), "threshold": bundle.threshold,
            "temperature": bundle.temperature, "characters": list(bundle.characters),
            "familiarity_threshold": bundle.stranger_detector and bundle.stranger_detector.threshold,
            "test_time_flip": bundle.test_time_flip,
            "prior_correction_strength": bundle.prior_correction and bundle.prior_correction.strength,
            "metrics": bundle.metadata.get("metrics", {}), "review": state.dataset is not None,
            "detector": state.detector.about(),
            "limits": {"picture_bytes": state.picture_limit, "clip_bytes": state.clip_limit}}


@router.post("/api/predict", openapi_extra=upload_body("the picture"), responses=UPLOAD_ERRORS)
async def predict(request: Request, state: State, heatmap: bool = False) -> dict[str, Any]:
    """Who is in the picture: like ``simpsons predict --json`` with the top 5 (and the heat map if asked)."""
    upload = await receive_upload(request, state.picture_limit, "picture")
    try:
        return await run_in_threadpool(lambda: answer_picture(state.predictor, read_picture(upload.file), heatmap))
    finally:
        await upload.close()


@router.post("/api/detect", openapi_extra=upload_body("the picture"),
             responses={**UPLOAD_ERRORS, 404: {"description": "the server has no detector"}})
async def detect(request: Request, state: State,
                 min_prob: Annotated[float, Query(ge=0, le=1)] = DEFAULT_MIN_PROBABILITY) -> dict[str, Any]:
    """Every character in the picture with its box: like ``simpsons detect --json`` (boxes ``x1, y1, x2, y2`` in
    the picture's pixels, most probable first, at or above ``min_prob``), with the picture's size."""
    state.detector.check()
    upload = await receive_upload(request, state.picture_limit, "picture")
    try:
        return await run_in_threadpool(detect_upload, state.detector, upload.file, min_prob)
    finally:
        await upload.close()


@router.post("/api/videos", status_code=202, openapi_extra=upload_body("the clip"), responses=UPLOAD_ERRORS)
async def submit_video(request: Request, state: State, sample_fps: Annotated[float, Query(gt=0, le=10)] = 2.0,
                       annotate: bool = True) -> dict[str, Any]:
    """Start analysing a clip (``annotate``: also write the annotated MP4); poll ``/api/videos/{id}``."""
    upload = await receive_upload(request, state.clip_limit, "clip")
    job = state.new_job(videos.Options(sample_fps=sample_fps), annotate)
    clip = job.folder / CLIP_NAME
    try:
        await run_in_threadpool(store, upload.file, clip)
        info = await run_in_threadpool(probe, clip)
    except SimpsonsError as error:
        with state.lock:
            state.forget(job)
        raise HTTPException(415, str(error).replace(str(clip), "the upload")) from None
    finally:
        await upload.close()
    job.expected = max(1, int(info.duration * sample_fps) + 1)
    state.analyses.submit(analyse_clip, state.predictor, job, state.model, state.stopping)
    return {"id": job.id, "status_url": f"/api/videos/{job.id}"}


@router.get("/api/videos/{job_id}")
def video_job(job_id: JobId, state: State) -> dict[str, Any]:
    """A clip's progress (0 to 1), then its screen time, segments and the links to its files."""
    return state.job(job_id).as_dict()


@router.get("/api/videos/{job_id}/{name}", response_class=FileResponse)
def video_file(job_id: JobId, name: JobFile, state: State) -> FileResponse:
    """One of a finished clip's files: the timeline chart, the timeline JSON, subtitles or the annotated video."""
    path = state.job(job_id).folder / name
    if not path.is_file():
        raise HTTPException(404, f"this job has no {name}")
    return FileResponse(path)


@router.get("/api/review")
def review_list(state: State) -> dict[str, Any]:
    """The crops waiting in ``DATASET/_review/``, the pictures per character and the known names."""
    return review_listing(state.review_root(), list(state.predictor.characters))


@router.get("/api/review/{folder}/{name}", response_class=FileResponse)
def review_image(folder: str, name: str, state: State) -> FileResponse:
    """One waiting crop."""
    return FileResponse(review_picture(state.review_root(), folder, name), media_type="image/jpeg")


@router.post("/api/review/undo", responses={409: {"description": "nothing to undo"}})
def review_undo(state: State) -> dict[str, Any]:
    """Put the last crop reviewed on this server back where it waited; answers with it and the updated listing."""
    with state.lock:
        return undo_last(state.review_session(), list(state.predictor.characters))


@router.post("/api/review/{folder}/{name}")
def review_act(folder: str, name: str, action: ReviewAction, state: State) -> dict[str, Any]:
    """Accept, relabel or reject one crop as ``label review`` does (a near-duplicate accept is refused, a
    rejected crop kept in ``_review/_rejected/``); answers with the outcome and the updated listing."""
    root = state.review_root()
    with state.lock:
        path = review_picture(root, folder, name)
        return apply_review(state.review_session(), path, action, list(state.predictor.characters))


def create_app(model: str | Path | None = None, dataset: str | Path | None = None,
               picture_limit: int = DEFAULT_PICTURE_LIMIT, clip_limit: int = DEFAULT_CLIP_LIMIT,
               backend: str | None = None, detector: str | Path | Literal[False] | None = None) -> FastAPI:
    """The web application; loads the model now and checks the detector's bundle (its network is loaded by the
    first detection). ``SimpsonsError`` for a bad bundle or dataset; ``backend``: ``Predictor.load``'s;
    ``detector``: a detector bundle, ``None`` for the shipped one when the install has it, ``False`` for none."""
    root = labelling.open_dataset(dataset, create=False) if dataset is not None else None
    served = served_detector(detector)
    predictor = BatchingPredictor.load(model, backend)
    predictor.warm_up()
    work = Path(tempfile.mkdtemp(prefix="simpsons-serve-"))
    state = ServerState(predictor, served, str(model or "the shipped model"), root, picture_limit, clip_limit, work)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.stopping.set()
        state.analyses.shutdown(wait=True, cancel_futures=True)
        state.close_review()
        predictor.close()
        served.close()
        shutil.rmtree(work, ignore_errors=True)

    app = FastAPI(title="simpsons", summary="Recognise characters of The Simpsons in pictures and clips",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.simpsons = state
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return app


# --------------------------------------------------------------------------- the command


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; ``SimpsonsError`` when the port is taken or the host unknown."""
    if not 0 <= port <= 65535:
        raise ParameterError("port", f"{{name}} must be between 0 and 65535, not {port}")
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        server = socket.socket(family, kind, protocol)
    except OSError as error:
        raise SimpsonsError(f"cannot listen on {host}: {error.strerror or error}") from None
    try:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(address)
        server.listen(128)
    except OSError as error:
        server.close()
        raise SimpsonsError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return server


def url_of(server: socket.socket) -> str:
    """``http://host:port`` of a listening socket."""
    host, port = server.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(model: str | None, host: str, port: int, dataset: str | None, picture_mb: int, clip_mb: int,
          backend: str | None = None, detector: str | None = None) -> None:
    """``simpsons serve``: check the options, load the model, then answer until Ctrl-C (limits in MB)."""
    import uvicorn

    server = listen(host, port)
    try:
        app = create_app(model, dataset, picture_mb * MB, clip_mb * MB, backend, detector)
        log.info("serving %s (Ctrl-C to stop)", url_of(server))
        uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[server])
    finally:
        server.close()
