"""The detector on the command line: ``detect``, ``train --boxes``, ``evaluate --boxes``, ``export`` and
``dataset check-boxes``.

``cli`` adds these options to its parser and hands the commands over; every error is a ``SimpsonsError``,
which it prints as one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simpsons.errors import SimpsonsError

DETECT_BATCH = 32  # pictures per network call of `detect`: the pool decodes the next ones meanwhile
# train options that shape a classifier's recipe: a detector's run refuses them rather than ignore them
CLASSIFIER_TRAINING_OPTIONS = ("augmentation", "mixing", "budget", "ema", "background", "cutout_boxes",
                               "prior_correction")


def _probability(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return number


def add_detect_command(commands: argparse._SubParsersAction) -> None:
    """``detect PATHS...``: every character in each picture, with its box."""
    from simpsons.detection.detector import DEFAULT_MIN_PROBABILITY

    detect = commands.add_parser("detect", help="find every character in pictures: boxes and names")
    detect.add_argument("paths", nargs="+", help="image files or folders")
    detect.add_argument("--model", help="detector bundle (with its .onnx export beside it: no Keras needed) or "
                                        "exported .onnx file (default: the shipped detector)")
    detect.add_argument("--json", action="store_true",
                        help="one JSON object per picture: path and detections (character, probability, box "
                             "x1, y1, x2, y2 in the picture's pixels), most probable first")
    detect.add_argument("--out-dir", metavar="DIR", help="write each picture with its boxes and names drawn here")
    detect.add_argument("--min-prob", type=_probability, default=DEFAULT_MIN_PROBABILITY, metavar="P",
                        help=f"report boxes at or above this probability (default {DEFAULT_MIN_PROBABILITY})")


def add_check_boxes_action(actions: argparse._SubParsersAction) -> None:
    """``dataset check-boxes BOXES``: the detector's verdict on each box of a boxes file."""
    check = actions.add_parser("check-boxes", help="find the boxes of a boxes file a detector disagrees with, "
                                                   "such as wrongly scaled ones; write a file without those")
    check.add_argument("boxes", help="boxes file (annotation.txt: path,x1,y1,x2,y2,character per line)")
    check.add_argument("--detector", help="detector bundle or .onnx file (default: the shipped detector)")
    check.add_argument("--report", metavar="CSV", help="write every box that does not agree, with its verdict, "
                                                       "IoU, scale and the detected box, to this CSV file")
    check.add_argument("--clean", metavar="FILE", help="write the boxes file without its scaled boxes here "
                                                       "(its paths relative to FILE's folder)")


def run_check_boxes(args: argparse.Namespace) -> int:
    """``dataset check-boxes BOXES``: a count per verdict; ``--report`` and ``--clean`` write files."""
    from simpsons.boxes import read_boxes
    from simpsons.detection.audit import check_boxes, clean_lines, report_csv, summary_table
    from simpsons.detection.detector import Detector
    from simpsons.files import write_atomically

    if args.clean and Path(args.clean).resolve() == Path(args.boxes).resolve():
        raise SimpsonsError("--clean must name a new file: it would overwrite the boxes file it checks")
    boxes = read_boxes(args.boxes)
    if not boxes:
        raise SimpsonsError(f"{args.boxes} holds no box")
    detector = Detector.load(args.detector, option="--detector")
    checks = check_boxes(detector, boxes, progress=True)
    if not checks:
        raise SimpsonsError(f"none of the pictures of {args.boxes} can be read")
    print(f"checked {len(checks)} of {len(boxes)} boxes (the others are on unreadable pictures)"
          if len(checks) < len(boxes) else f"checked {len(checks)} boxes")
    print(summary_table(checks))
    if args.report:
        write_atomically(args.report, report_csv(checks).encode())
        print(f"wrote {args.report}")
    if args.clean:
        write_atomically(args.clean, clean_lines(boxes, checks, Path(args.clean).resolve().parent).encode())
        print(f"wrote {args.clean}")
    return 0


def add_boxes_option(parser: argparse.ArgumentParser, purpose: str) -> None:
    """``--boxes FILE`` on ``train`` and ``evaluate``: the command then trains or measures a detector."""
    parser.add_argument("--boxes", metavar="FILE", help=f"boxes of the characters (annotation.txt: "
                                                        f"path,x1,y1,x2,y2,character per line): {purpose}")


def wants_detector_training(args: argparse.Namespace) -> bool:
    """Whether ``train``'s arguments ask for a detector: boxes, a detector preset, or resuming a detector's run."""
    from simpsons.detection.training import PRESETS, is_detection_run

    return bool(args.boxes) or args.preset in PRESETS or bool(args.resume and is_detection_run(args.resume))


def describe_detector_presets() -> str:
    """The detector presets, one line each, for ``train --list-presets``."""
    from simpsons.detection.training import PRESETS

    return "\n".join(f"{recipe.name:<12} {recipe.description}" for recipe in PRESETS.values())


def run_train_detector(args: argparse.Namespace) -> int:
    """``train DATA --boxes FILE --out RUN`` and ``train --resume RUN`` of a detector's run."""
    from simpsons.bundle import read_description
    from simpsons.detection.training import resolve_detector_recipe, resume_detector_training, train_detector

    given = [option for option in CLASSIFIER_TRAINING_OPTIONS if getattr(args, option, None) not in (None, False)]
    if given:
        raise SimpsonsError(f"--{given[0].replace('_', '-')} shapes a classifier's training; a detector trains on "
                            "mosaics of its boxed pictures")
    if args.resume:
        resume_detector_training(args.resume, time_limit_minutes=args.time_limit)
        return 0
    if not args.data or not args.out or not args.boxes:
        raise SimpsonsError("training a detector needs a DATA folder, --boxes FILE and --out RUN_DIR "
                            "(or --resume RUN_DIR)")
    if not Path(args.boxes).is_file():
        raise SimpsonsError(f"boxes file not found: {args.boxes}")
    trained = read_description(args.init).metadata if args.init else {}
    recipe = resolve_detector_recipe(args.preset, arch=args.arch or trained.get("arch"), epochs=args.epochs,
                                     batch_size=args.batch_size, image_size=args.image_size,
                                     learning_rate=args.learning_rate)
    train_detector(args.data, args.boxes, args.out, recipe, seed=args.seed, min_images=args.min_images,
                   characters=args.characters, init_bundle=args.init, time_limit_minutes=args.time_limit,
                   test_dir=args.test)
    return 0


def run_export_detector(args: argparse.Namespace, source: str | Path) -> int:
    """``export DETECTOR.simpsons --onnx FILE``: the detector's network as ONNX, float only."""
    from simpsons.bundle import network_fingerprint
    from simpsons.detection.bundle import load_detector
    from simpsons.export import export_detector_onnx

    if args.int8:
        raise SimpsonsError("--int8 quantizes a classifier; a detector exports in float only")
    export_detector_onnx(load_detector(source), args.onnx, source=network_fingerprint(source))
    print(f"wrote {args.onnx}")
    return 0


def run_evaluate_detector(args: argparse.Namespace) -> int:
    """``evaluate DATA --boxes FILE --model DETECTOR``: COCO mAP and AP per character on the boxed pictures
    under DATA; ``--json`` writes them, ``--report-dir`` the report (``detection.report``)."""
    from simpsons.detection.detector import Detector
    from simpsons.detection.evaluation import answer_boxes, boxes_under
    from simpsons.detection.report import REPORT_FILES, write_report
    from simpsons.files import write_json

    if args.write or args.backend:
        raise SimpsonsError("--write and --backend are for classifiers; a detector's evaluation prints its table "
                            "and writes --json FILE and --report-dir DIR")
    if not Path(args.data).is_dir():
        raise SimpsonsError(f"dataset folder not found: {args.data}")
    boxes = boxes_under(args.boxes, args.data)
    detector = Detector.load(args.model)
    answers = answer_boxes(detector, boxes)
    scores = answers.scores()
    if not scores.pictures:
        raise SimpsonsError(f"no picture under {args.data} has a box of a character the detector knows")
    print(scores.table())
    if scores.skipped:
        print(f"not counted: {len(scores.skipped)} picture(s) (unreadable, or of characters the detector does "
              "not know), e.g. " + "; ".join(f"{path}: {why}" for path, why in list(scores.skipped.items())[:3]))
    summary = {"model": str(args.model or "default"), "data": str(args.data), **scores.as_dict()}
    if args.json:
        write_json(summary, args.json)
    if args.report_dir:
        write_report(answers, scores, summary, Path(args.report_dir))
        print(f"wrote {', '.join(REPORT_FILES)} to {args.report_dir}")
    return 0


def run_detect(args: argparse.Namespace) -> int:
    """``detect PATHS...``: a table, or one JSON object per picture; ``--out-dir`` draws the boxes."""
    import numpy as np

    from simpsons.data import IMAGE_SUFFIXES, answer_in_batches, describe_bad_files, gather_files
    from simpsons.detection.detector import Detector

    files = gather_files(args.paths, IMAGE_SUFFIXES, kind="picture")
    drawn_paths = _drawn_paths(files, Path(args.out_dir)) if args.out_dir else {}
    detector = Detector.load(args.model)
    readable, found, bad = answer_in_batches(
        detector.prepare_files(files), DETECT_BATCH,
        lambda batch: detector.detect_prepared(np.stack([pixels for pixels, _ in batch]),
                                               [placement for _, placement in batch], args.min_prob))
    if not readable:
        raise SimpsonsError(f"no readable picture among {len(files)} file(s)")
    if args.json:
        for path, detections in zip(readable, found):
            print(json.dumps({"path": str(path), "detections": [d.as_dict() for d in detections]}))
    else:
        print(detections_table(readable, found))
    if drawn_paths:
        _draw_all(readable, found, drawn_paths, detector.characters)
    if bad:
        print(describe_bad_files(bad), file=sys.stderr)
    return 0


def detections_table(paths: list[Path], found: list) -> str:
    """One row per detection (the picture named on its first), ``nothing found`` for a picture without any."""
    names = [str(path) for path in paths]
    width = min(60, max(len(name) for name in names + ["image"]))
    rows = [f"{'image':<{width}}  {'character':<26} {'prob':>5}  box (x1, y1, x2, y2)"]
    for name, detections in zip(names, found):
        shown = name if len(name) <= width else "..." + name[-(width - 3):]
        if not detections:
            rows.append(f"{shown:<{width}}  {'(nothing found)':<26}")
        for number, detection in enumerate(detections):
            box = ", ".join(f"{value:.0f}" for value in detection.box)
            rows.append(f"{shown if number == 0 else '':<{width}}  {detection.character:<26} "
                        f"{detection.probability:>5.2f}  {box}")
    return "\n".join(rows)


def _drawn_paths(files: list[Path], out_dir: Path) -> dict[Path, Path]:
    """Where each picture is drawn: ``DIR/<name>.png`` (numbered when two pictures share a name); refused when
    that is one of the pictures given."""
    given = {path.resolve() for path in files}
    targets, taken = {}, set()
    for path in files:
        target = out_dir / f"{path.stem}.png"
        number = 1
        while target in taken:
            target, number = out_dir / f"{path.stem}_{number}.png", number + 1
        if target.resolve() in given:
            raise SimpsonsError(f"--out-dir would overwrite the picture {target}: choose another folder")
        targets[path] = target
        taken.add(target)
    return targets


def _draw_all(paths: list[Path], found: list, targets: dict[Path, Path], characters: list[str]) -> None:
    from simpsons.data import open_rgb
    from simpsons.detection.drawing import draw_detections, save_drawn

    for path, detections in zip(paths, found):
        save_drawn(draw_detections(open_rgb(path), detections, characters), targets[path])
    print(f"drew {len(paths)} picture(s) into {Path(next(iter(targets.values()))).parent}", file=sys.stderr)
