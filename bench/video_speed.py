"""Speed of ``simpsons video``: default settings on a clip of several minutes, every frame on a short clip.

The long clip is built from ../shared/data/videos/*.mp4 (re-encoded one after the other, looped, at the
first clip's size and frame rate) in a temporary folder, or kept at --clip. Measured in this one process,
interleaved: the Keras and the ONNX Runtime predictor (the export beside the bundle), and the same without
batching frames together and without the decoding thread; then the command line itself (start-up
included) in subprocesses, through its default engine (ONNX Runtime) and with --backend keras.

Usage: python bench/video_speed.py [--minutes 4] [--clip PATH] [--repeats 3] [--model BUNDLE]
Prints one JSON object; times are medians over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import av  # noqa: E402
import numpy as np  # noqa: E402

from machine import machine  # noqa: E402  (bench/machine.py, beside this script)
from simpsons.prediction import Predictor, default_model_path  # noqa: E402
from simpsons.frames import CROPS, crop_frame, probe, sampled_frames  # noqa: E402
from simpsons.video import CropAnswers, analyse_video, write_annotated  # noqa: E402

VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "videos"
SHORT_CLIP = VIDEOS / "comic_shop.mp4"


def build_clip(sources: list[Path], target: Path, minutes: float) -> Path:
    """The sources one after the other, looped until ``minutes`` long, as H.264 at the first one's size and rate."""
    first = probe(sources[0])
    with av.open(str(target), "w") as output:
        stream = output.add_stream("libx264", rate=Fraction(first.fps).limit_denominator(1001),
                                   options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
        frames, wanted = 0, round(minutes * 60 * first.fps)
        while frames < wanted:
            for source in sources:
                for _, image in sampled_frames(source, 0):
                    frame = av.VideoFrame.from_image(image.resize((first.width, first.height)))
                    frame.pts = frames
                    output.mux(stream.encode(frame))
                    frames += 1
        output.mux(stream.encode())
    return target


def median_seconds(function: Callable[[], float], repeats: int) -> float:
    return statistics.median(function() for _ in range(repeats))


def analysis(clip: Path, predictor: Predictor, sample_fps: float, batch_frames: int = 16) -> Callable[[], float]:
    """``analyse_video`` as ``simpsons video`` runs it (decoding thread, batches of frames)."""
    return lambda: analyse_video(clip, predictor, sample_fps, batch_frames=batch_frames, progress=False).seconds


def without_thread(clip: Path, predictor: Predictor, sample_fps: float, batch_frames: int = 16) -> Callable[[], float]:
    """The same work with decoding, cropping and the network one after the other in this thread."""
    def run() -> float:
        began = time.perf_counter()
        batch: list[np.ndarray] = []
        for _, image in sampled_frames(clip, sample_fps):
            if image is not None:
                batch += [predictor.prepare(part) for part in crop_frame(image, CROPS)]
            if len(batch) >= 3 * batch_frames:
                predictor.decide(predictor.probabilities(np.stack(batch)), top_k=1)
                batch = []
        if batch:
            predictor.decide(predictor.probabilities(np.stack(batch)), top_k=1)
        return time.perf_counter() - began
    return run


def annotation(clip: Path, predictor: Predictor, target: Path) -> Callable[[], float]:
    """The ``--out`` pass alone: decode every frame, draw the labels, encode H.264."""
    result = analyse_video(clip, predictor, progress=False)
    paint = CropAnswers(predictor).painter(result.samples, window=3)
    times = [sample.time for sample in result.samples]

    def run() -> float:
        began = time.perf_counter()
        write_annotated(clip, target, times, paint, progress=False)
        return time.perf_counter() - began
    return run


def command_seconds(*argv: str) -> float:
    """Wall time of the installed command line, start-up included."""
    began = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "simpsons"), "video", *argv], check=True,
                   capture_output=True)
    return time.perf_counter() - began


def measure(clip: Path, model: str, repeats: int, scratch: Path) -> dict:
    """Every figure of the report, the in-process ones interleaved Keras / ONNX."""
    long_info, short_info = probe(clip), probe(SHORT_CLIP)
    keras_predictor, onnx_predictor = Predictor.load(model, "keras"), Predictor.load(model, "onnx")
    runs = {
        "default_keras": analysis(clip, keras_predictor, 2.0),
        "default_onnx": analysis(clip, onnx_predictor, 2.0),
        "default_onnx_unbatched": analysis(clip, onnx_predictor, 2.0, batch_frames=1),
        "default_onnx_without_thread": without_thread(clip, onnx_predictor, 2.0),
        "every_frame_keras": analysis(SHORT_CLIP, keras_predictor, 0.0),
        "every_frame_onnx": analysis(SHORT_CLIP, onnx_predictor, 0.0),
        "every_frame_onnx_unbatched": analysis(SHORT_CLIP, onnx_predictor, 0.0, batch_frames=1),
        "every_frame_onnx_without_thread": without_thread(SHORT_CLIP, onnx_predictor, 0.0),
        "annotate_short_clip": annotation(SHORT_CLIP, onnx_predictor, scratch / "annotated.mp4"),
    }
    for predictor in (keras_predictor, onnx_predictor):  # warm-up: first calls
        analyse_video(SHORT_CLIP, predictor, progress=False)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(run())
    seconds = {name: statistics.median(values) for name, values in times.items()}
    result = {f"{name}_s": round(value, 3) for name, value in seconds.items()}
    for name in ("default_keras", "default_onnx", "default_onnx_unbatched", "default_onnx_without_thread"):
        result[f"{name}_x_real_time"] = round(long_info.duration / seconds[name], 1)
    for name in ("every_frame_keras", "every_frame_onnx", "every_frame_onnx_unbatched",
                 "every_frame_onnx_without_thread"):
        result[f"{name}_s_per_frame"] = round(seconds[name] / short_info.frames, 4)
    result["annotate_frames_per_s"] = round(short_info.frames / seconds["annotate_short_clip"], 1)
    command = {
        "command_default_keras": (str(clip), "--model", model, "--backend", "keras"),
        "command_default_onnx": (str(clip), "--model", model),
        "command_every_frame_onnx": (str(SHORT_CLIP), "--sample-fps", "0", "--model", model),
    }
    for name, argv in command.items():
        result[f"{name}_s"] = round(median_seconds(lambda argv=argv: command_seconds(*argv), repeats), 2)
    result["command_default_onnx_x_real_time"] = round(long_info.duration / result["command_default_onnx_s"], 1)
    result["command_default_keras_x_real_time"] = round(long_info.duration / result["command_default_keras_s"], 1)
    result["command_every_frame_onnx_s_per_frame"] = round(result["command_every_frame_onnx_s"] / short_info.frames, 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=4.0, help="length of the long clip (default 4)")
    parser.add_argument("--clip", type=Path, help="keep the long clip here (built when missing)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=str(default_model_path()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        clip = args.clip or scratch / "long.mp4"
        if not clip.is_file():
            build_clip(sorted(VIDEOS.glob("*.mp4")), clip, args.minutes)
        info = probe(clip)
        report = {"machine": machine(),
                  "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
                  "long_clip": {"seconds": round(info.duration, 1), "frames": info.frames,
                                "size": f"{info.width}x{info.height}", "fps": round(info.fps, 2)},
                  "short_clip": {"path": SHORT_CLIP.name, "frames": probe(SHORT_CLIP).frames},
                  **measure(clip, args.model, args.repeats, scratch)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
