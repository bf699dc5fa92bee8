"""The ``simpsons`` command line: dataset, train, evaluate and predict."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from simpsons import __version__
from simpsons.detection.commands import (
    add_boxes_option,
    add_check_boxes_action,
    add_detect_command,
    describe_detector_presets,
    run_check_boxes,
    run_detect,
    run_evaluate_detector,
    run_export_detector,
    run_train_detector,
    wants_detector_training,
)
from simpsons.errors import ParameterError, SimpsonsError
from simpsons.extras import import_tensorflow_quietly, require_training_extra

EXIT_USAGE = 2
PREDICT_BATCH = 256  # pictures per network call of `predict`: the pool decodes the next ones meanwhile


def _characters(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one character name")
    return names


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return number


def _add_selection(parser: argparse.ArgumentParser) -> None:
    from simpsons.data import DEFAULT_MIN_IMAGES

    parser.add_argument("--min-images", type=_positive, default=DEFAULT_MIN_IMAGES,
                        help=f"keep characters with at least this many images (default {DEFAULT_MIN_IMAGES}: "
                             "the 20 characters of the Kaggle test set)")
    parser.add_argument("--characters", type=_characters, help="comma-separated character names to keep instead")


def _add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("onnx", "keras"),
                        help="what runs the network: onnx (ONNX Runtime, the export beside the bundle) or keras "
                             "(needs the training extra); default: onnx when the bundle has an up-to-date export "
                             "beside it (the shipped model has), else keras")


def build_parser() -> argparse.ArgumentParser:
    """The ``simpsons`` parser: one sub-command per ``add_*_command`` function."""
    parser = argparse.ArgumentParser(prog="simpsons", description="Recognise characters of The Simpsons.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in (add_dataset_command, add_train_command, add_evaluate_command, add_export_command,
                        add_predict_command, add_detect_command, add_confidence_command, add_label_command,
                        add_video_command, add_serve_command):
        add_command(commands)
    return parser


def add_dataset_command(commands: argparse._SubParsersAction) -> None:
    """``dataset stats DATA``, ``dataset pack DATA --out FILE`` and ``dataset check-boxes BOXES``."""
    dataset = commands.add_parser("dataset", help="inspect or pack a dataset")
    actions = dataset.add_subparsers(dest="action", required=True)
    stats = actions.add_parser("stats", help="images per character, near-duplicate groups, unreadable files")
    stats.add_argument("data", help="dataset folder (one folder per character, or flat <character>_<n>.jpg)")
    stats.add_argument("--plot", help="write the bar chart of images per character to this PNG")
    stats.add_argument("--json", help="write the statistics to this JSON file")
    pack = actions.add_parser("pack", help="store the decoded images as JPEG bytes in one .pack.npz file")
    pack.add_argument("data")
    pack.add_argument("--out", required=True, help="output file, ending in .pack.npz")
    pack.add_argument("--image-size", type=_positive, default=96)
    pack.add_argument("--quality", type=_positive, default=90, help="JPEG quality (default 90)")
    pack.add_argument("--min-images", type=_positive, default=1,
                      help="keep characters with at least this many images (default 1: all; 120 keeps the 20 "
                           "characters of the Kaggle test set)")
    pack.add_argument("--characters", type=_characters, help="comma-separated character names to keep instead")
    add_check_boxes_action(actions)


def add_train_command(commands: argparse._SubParsersAction) -> None:
    """``train DATA --out RUN_DIR``, ``train --resume RUN_DIR`` and ``train --list-presets``."""
    train = commands.add_parser("train", help="train a model and write a run folder with a model bundle")
    train.add_argument("data", nargs="?", help="training dataset folder or .pack.npz")
    train.add_argument("--out", help="run folder to create")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    train.add_argument("--test", help="test set (either layout) evaluated at the end")
    train.add_argument("--preset", help="named recipe (see --list-presets)")
    train.add_argument("--arch", help="architecture instead of the preset's (see --list-presets)")
    train.add_argument("--epochs", type=_positive)
    train.add_argument("--batch-size", type=_positive)
    train.add_argument("--image-size", type=_positive)
    train.add_argument("--learning-rate", type=_positive_float, metavar="LR",
                       help="peak learning rate instead of the preset's")
    train.add_argument("--augmentation", metavar="POLICY",
                       help="augmentation policy instead of the preset's (see --list-presets)")
    train.add_argument("--mixing", metavar="POLICY",
                       help="mix training pictures in pairs: cutmix or mixup (default none; see --list-presets)")
    train.add_argument("--seed", type=int, help="seed of the split and the training (default 0, or --init's)")
    train.add_argument("--init", metavar="BUNDLE",
                       help="start from this model bundle's weights (fine-tuning): same architecture and "
                            "characters, any input size; e.g. --preset fixres")
    train.add_argument("--time-limit", type=float, metavar="MINUTES",
                       help="stop cleanly after the epoch that would overrun this many minutes")
    train.add_argument("--budget", type=_positive_float, metavar="MINUTES",
                       help="as many epochs (at most --epochs or the preset's) as fit in this many minutes of "
                            "training on this machine, measured by a short probe first (the laptop preset's: 30)")
    train.add_argument("--ema", type=_positive_float, metavar="MOMENTUM",
                       help="validate and keep a moving average of the weights, updated every step with this "
                            "momentum (e.g. 0.999; default: the weights themselves)")
    train.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    train.add_argument("--no-prior-correction", dest="prior_correction", action="store_false", default=None,
                       help="keep the training pictures' frequencies in the answers (frequent characters win close "
                            "calls) instead of counting every character as equally likely")
    train.add_argument("--background", metavar="DIR",
                       help="pictures showing none of the characters (any names, any depth): "
                            "trained as one more class, no_character")
    train.add_argument("--cutout-boxes", metavar="FILE",
                       help="boxes of the characters (path,x1,y1,x2,y2,character per line) that the composite "
                            "augmentation cuts them out along (default: annotation.txt beside DATA)")
    add_boxes_option(train, "train a detector on the boxed pictures of DATA (preset detector)")
    _add_selection(train)


def add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    """``evaluate DATA``: per-character metrics on a labelled set."""
    evaluate = commands.add_parser("evaluate", help="per-character precision, recall and F1 on a labelled set")
    evaluate.add_argument("data", help="labelled images (either layout)")
    evaluate.add_argument("--model", help="model bundle (default: the shipped model); with --boxes, a detector bundle "
                                          "or its exported .onnx file")
    _add_backend(evaluate)
    evaluate.add_argument("--json", help="write the metrics to this JSON file")
    evaluate.add_argument("--report-dir", help="write the confusion matrix and the grid of 12 here (with --boxes: "
                                               "scores, precision-recall curves and the worst misses)")
    evaluate.add_argument("--write", action="store_true",
                          help="store the test accuracy in the bundle given by --model (what `serve` shows)")
    add_boxes_option(evaluate, "measure a detector (--model DETECTOR) on the boxed pictures under DATA")


def add_export_command(commands: argparse._SubParsersAction) -> None:
    """``export [BUNDLE] --onnx FILE``."""
    export = commands.add_parser("export", help="export a model or detector bundle to ONNX (runs with ONNX Runtime)")
    export.add_argument("bundle", nargs="?", help="model or detector bundle to export (default: the shipped model)")
    export.add_argument("--onnx", required=True,
                        help="output .onnx file: beside the bundle with its name (model.onnx for model.simpsons), "
                             "every command answers for the bundle through it; alone, usable as --model")
    export.add_argument("--int8", metavar="TRAIN_DATA",
                        help="quantize to 8-bit integers, calibrated on pictures of the training data: "
                             "smaller and faster on a CPU; prints how often it agrees with the float model")


def add_predict_command(commands: argparse._SubParsersAction) -> None:
    """``predict PATHS...``: the character in each picture."""
    predict = commands.add_parser("predict", help="name the character in pictures")
    predict.add_argument("paths", nargs="+", help="image files or folders")
    predict.add_argument("--model", help="model bundle (with its .onnx export beside it: fast) or exported .onnx "
                                         "file (default: the shipped model)")
    _add_backend(predict)
    predict.add_argument("--top-k", type=_positive, default=3)
    predict.add_argument("--json", action="store_true", help="one JSON object per image instead of a table")


def add_confidence_command(commands: argparse._SubParsersAction) -> None:
    """``confidence DATA --report-dir DIR``: the confidence study."""
    confidence = commands.add_parser("confidence", help="confidence study: correct vs wrong, thresholds, calibration")
    confidence.add_argument("data", help="labelled images (either layout) to study")
    confidence.add_argument("--model", help="model bundle (default: the shipped model; --write needs one)")
    _add_backend(confidence)
    confidence.add_argument("--report-dir", required=True,
                            help="write the scatter, threshold and reliability PNGs here")
    confidence.add_argument("--json", help="write the figures, all curves and the recommendation to this JSON file")
    confidence.add_argument("--character", help="also plot the scatter for this character's images")
    confidence.add_argument("--target-precision", type=float, metavar="P",
                            help="recommend the lowest threshold reaching this precision instead of the best F1")
    confidence.add_argument("--calibrate", metavar="TRAIN_DATA",
                            help="the model's training data: choose the prior correction, fit the temperature and "
                                 "choose the thresholds on its shot-aware validation split (the data studied then "
                                 "only measures them)")
    confidence.add_argument("--unknown", metavar="DATA",
                            help="labelled images whose characters the model does not know (others are ignored): "
                                 "AUROC of known against unknown per score and per unknown character, and the "
                                 "share rejected; with --calibrate also the nearest-training-picture score and "
                                 "the stranger detector")
    confidence.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                            help="study the model answering from the mean of each picture and its mirror image "
                                 "(flip test-time augmentation: twice the work per picture); default: as the bundle")
    confidence.add_argument("--no-prior-correction", dest="prior_correction", action="store_false",
                            help="study (and with --write store) the model without a prior correction, keeping "
                                 "the training pictures' frequencies in its answers")
    confidence.add_argument("--write", action="store_true",
                            help="store the prior correction, the thresholds, the temperature, the stranger detector "
                                 "(with --unknown) and the --flip choice in the --model bundle (needs --calibrate)")


def add_label_command(commands: argparse._SubParsersAction) -> None:
    """``label [videos] VIDEOS... --into DATASET`` and ``label review DATASET``."""
    label = commands.add_parser("label", help="label video frames into a dataset; review what --auto filed",
                                description="simpsons label VIDEOS... --into DATASET labels frames by hand "
                                            "(or with --auto, by the model into DATASET/_review/; with --auto "
                                            "--detect, by the detector's boxes); "
                                            "simpsons label review DATASET checks what --auto left there.")
    actions = label.add_subparsers(dest="action", required=True, metavar="{videos,review}")
    videos = actions.add_parser("videos", help="label frames of videos (the default: label VIDEOS... --into DATASET)")
    videos.add_argument("videos", nargs="+", metavar="VIDEOS", help="video files or folders")
    videos.add_argument("--into", metavar="DATASET", help="dataset folder (one folder per character)")
    videos.add_argument("--every", default="100-250", help="frames between two looks, FROM-TO (default 100-250)")
    videos.add_argument("--seed", type=int, help="seed for the video order, start and steps")
    videos.add_argument("--start-within", type=float, default=180.0, metavar="SECONDS",
                        help="start at a random frame within the first SECONDS (default 180)")
    videos.add_argument("--auto", action="store_true", help="let the model file crops into DATASET/_review/")
    videos.add_argument("--model", help="model bundle (--auto: classifier, default the shipped one; else: names)")
    _add_backend(videos)
    videos.add_argument("--min-prob", type=float, default=0.6, help="--auto keeps crops at or above this (0.6)")
    videos.add_argument("--keep-unsure", action="store_true", help="--auto: keep the others in _review/_unsure/")
    videos.add_argument("--detect", action="store_true",
                        help="--auto: crop around each character the detector finds (at or above --min-prob) "
                             "and file it under the detector's name, instead of classifying left, right and full")
    videos.add_argument("--detector", metavar="BUNDLE", help="--detect: detector bundle (default: the shipped one)")
    review = actions.add_parser("review", help="accept, relabel or reject the crops --auto left in DATASET/_review/")
    review.add_argument("dataset", metavar="DATASET", help="dataset folder holding _review/")


def _with_label_action(argv: list[str]) -> list[str]:
    """``label VIDEOS...`` is short for ``label videos VIDEOS...``."""
    if len(argv) > 1 and argv[0] == "label" and argv[1] not in ("videos", "review", "-h", "--help"):
        return [argv[0], "videos", *argv[1:]]
    return argv


def add_video_command(commands: argparse._SubParsersAction) -> None:
    """``video INPUTS...``: who is on screen when."""
    from simpsons.detection.detector import DEFAULT_MIN_PROBABILITY

    video = commands.add_parser("video", help="who is on screen when: segments, screen time, SRT, chart, "
                                              "annotated video")
    video.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="video files or folders of them (any container, resolution and frame rate PyAV decodes)")
    video.add_argument("--model", help="model bundle or exported .onnx file (default: the shipped model)")
    _add_backend(video)
    video.add_argument("--out", metavar="FILE.mp4", help="write the annotated video (H.264, names and probabilities "
                                                         "drawn on every frame, the input's audio)")
    video.add_argument("--out-dir", metavar="DIR",
                       help="write each video's outputs as DIR/<video>.<output name> (alone: timeline.json, "
                            "subtitles.srt and timeline.png); several videos without it: beside the output names")
    video.add_argument("--timeline", metavar="FILE", help="write the timeline: .json (segments and samples) or .csv")
    video.add_argument("--srt", metavar="FILE", help="write SRT subtitles naming who is on screen")
    video.add_argument("--chart", metavar="FILE", help="write the timeline chart (one lane per character) as PNG")
    video.add_argument("--sample-fps", type=float, default=2.0, metavar="F",
                       help="frames analysed per second of video (default 2; 0 = every frame)")
    video.add_argument("--crops", help="crops per frame the classifier names (default left,right,full)")
    video.add_argument("--detect", action="store_true",
                       help="find the characters with a detector instead: every character in each sampled frame, "
                            "wherever it stands, with its box (drawn on --out's video)")
    video.add_argument("--detector", metavar="BUNDLE", help="detector bundle for --detect (default: the shipped one)")
    video.add_argument("--batch-frames", type=_positive, default=16, metavar="N",
                       help="frames that go through the model together (default 16)")
    video.add_argument("--min-prob", type=float, metavar="P",
                       help=f"presence threshold (default: the bundle's threshold, else 0.5; with --detect, a box "
                            f"at or above {DEFAULT_MIN_PROBABILITY})")
    video.add_argument("--smooth", type=_positive, default=3, metavar="N",
                       help="majority filter over N neighbouring samples, odd (default 3; 1 = none)")
    video.add_argument("--workers", type=_positive, metavar="N",
                       help="a folder of episodes: analyse N at a time in local worker processes (default: the cores)")
    video.add_argument("--cluster", metavar="ADDRESS",
                       help="a folder of episodes: run them on the Dask scheduler at ADDRESS (tcp://host:8786)")


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    """``serve``: the web app."""
    serve = commands.add_parser("serve", help="the web app: drop a picture or a clip in the browser; review labels")
    serve.add_argument("--model", help="model bundle or exported .onnx file (default: the shipped model)")
    _add_backend(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--dataset", metavar="DIR", help="dataset whose _review/ crops the Review panel shows")
    serve.add_argument("--detector", metavar="BUNDLE",
                       help="detector bundle that draws every character's box on the Picture panel and answers "
                            "/api/detect (default: the shipped detector when the install has one)")
    serve.add_argument("--picture-limit", type=_positive, default=20, metavar="MB", help="largest picture (20 MB)")
    serve.add_argument("--clip-limit", type=_positive, default=500, metavar="MB", help="largest clip (500 MB)")


def _keras_task(args: argparse.Namespace) -> str | None:
    """What the command needs Keras for, as the missing-extra message names it; ``None`` when ONNX Runtime
    answers (the shipped model and any bundle exported beside it) or no network is involved."""
    if args.command in ("train", "export"):
        return f"simpsons {args.command}"
    if args.command == "confidence" and args.calibrate:
        return "simpsons confidence --calibrate"
    labels_by_hand = args.command == "label" and not getattr(args, "auto", False)
    if getattr(args, "backend", None) == "keras" and not labels_by_hand:
        return "--backend keras"
    return None


FLAGS = {"run_dir": "--out", "init_bundle": "--init", "background_dir": "--background", "budget_minutes": "--budget",
         "ema_momentum": "--ema"}  # library parameters whose flag is not their name


def flag_of(parameter: str) -> str:
    """The command-line flag of a library parameter: ``min_prob`` -> ``--min-prob``, or its name in ``FLAGS``."""
    return FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


class _MessageFormat(logging.Formatter):
    """``simpsons: MESSAGE``, and ``simpsons: warning: MESSAGE`` for warnings and worse."""

    def format(self, record: logging.LogRecord) -> str:
        kind = "warning: " if record.levelno >= logging.WARNING else ""
        return f"simpsons: {kind}{record.getMessage()}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each message."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _) -> None:
        pass


def _report_library_messages() -> None:
    """Show the library's log messages (progress and warnings) on stderr, once per process."""
    logger = logging.getLogger("simpsons")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_MessageFormat())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs a command; user errors print one line and return exit code 2."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(_with_label_action(sys.argv[1:] if argv is None else list(argv)))
    _report_library_messages()
    try:
        if (task := _keras_task(args)) is not None:
            require_training_extra(task)
            import_tensorflow_quietly()
        return COMMANDS[args.command](args)
    except ParameterError as error:
        print(f"simpsons: error: {error.naming(flag_of)}", file=sys.stderr)
        return EXIT_USAGE
    except SimpsonsError as error:
        print(f"simpsons: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("simpsons: interrupted", file=sys.stderr)
        return 130


def run_dataset(args: argparse.Namespace) -> int:
    from simpsons import data as datasets

    if args.action == "check-boxes":
        return run_check_boxes(args)
    if args.action == "pack":
        if not args.out.endswith(datasets.PACK_SUFFIX):
            raise SimpsonsError(f"the pack file name must end in {datasets.PACK_SUFFIX}")
        images = datasets.load_images(args.data, args.image_size)
        images = datasets.select_characters(images, min_images=args.min_images, characters=args.characters)
        datasets.write_pack(images, args.out, quality=args.quality)
        print(f"packed {len(images)} images of {len(images.characters)} characters into {args.out}")
        return 0
    images = datasets.load_images(args.data, 64)
    from simpsons.files import write_json
    from simpsons.plots import plot_counts

    groups = datasets.near_duplicate_groups(images.hashes)
    counts = dict(sorted(images.counts().items(), key=lambda item: -item[1]))
    width = max([len(name) for name in counts] + [9])
    print(f"{'character':<{width}}  images")
    for name, count in counts.items():
        print(f"{name:<{width}}  {count:>6}")
    print(f"{'total':<{width}}  {len(images):>6}")
    print(f"{len(counts)} characters; {len(set(groups.tolist()))} near-duplicate groups "
          f"(difference hash within {datasets.NEAR_DUPLICATE_DISTANCE} of 256 bits)")
    print(datasets.describe_bad_files(images.bad_files) or "no unreadable files")
    if args.plot:
        plot_counts(counts, args.plot, f"Images per character in {Path(args.data).name}")
    if args.json:
        write_json({"counts": counts, "images": len(images), "near_duplicate_groups": len(set(groups.tolist())),
                    "unreadable": [b.__dict__ for b in images.bad_files]}, args.json)
    return 0


def run_train(args: argparse.Namespace) -> int:
    from simpsons.bundle import read_description
    from simpsons.models import ARCHITECTURES, AUGMENTATIONS, MIXINGS
    from simpsons.training import PRESETS, resolve_recipe, resume_training, train

    if args.list_presets:
        for recipe in PRESETS.values():
            print(f"{recipe.name:<12} {recipe.description}")
        print("\naugmentation policies (--augmentation):")
        for name, description in AUGMENTATIONS.items():
            print(f"{name:<12} {description}")
        print("\nmixing policies (--mixing):")
        for name, description in MIXINGS.items():
            print(f"{name:<12} {description}")
        print("\narchitectures (--arch):")
        for architecture in ARCHITECTURES.values():
            print(f"{architecture.name:<18} {architecture.description}")
        print("\ndetector presets (train DATA --boxes FILE):")
        print(describe_detector_presets())
        return 0
    if wants_detector_training(args):
        return run_train_detector(args)
    if args.resume:
        _report_run(resume_training(args.resume, time_limit_minutes=args.time_limit))
        return 0
    if not args.data or not args.out:
        raise SimpsonsError("train needs a DATA folder and --out RUN_DIR (or --resume RUN_DIR)")
    trained = read_description(args.init).metadata if args.init else {}
    recipe = resolve_recipe(args.preset, args.arch or trained.get("arch"),
                            init_augmentation=trained.get("recipe", {}).get("augmentation"),
                            epochs=args.epochs, batch_size=args.batch_size,
                            image_size=args.image_size, learning_rate=args.learning_rate,
                            augmentation=args.augmentation, mixing=args.mixing, budget_minutes=args.budget,
                            ema_momentum=args.ema,
                            prior_correction=args.prior_correction)
    _report_run(train(args.data, args.out, recipe, seed=args.seed, min_images=args.min_images,
                      characters=args.characters, test_dir=args.test, time_limit_minutes=args.time_limit,
                      background_dir=args.background, init_bundle=args.init, cutout_boxes=args.cutout_boxes))
    return 0


def _report_run(bundle_path: Path) -> None:
    """The metrics of the bundle a training session wrote, and how to go on when it stopped early."""
    from simpsons.bundle import read_description

    metadata = read_description(bundle_path).metadata
    print(json.dumps(metadata["metrics"], indent=2))
    if metadata.get("interrupted") or metadata["metrics"]["epochs_done"] < metadata["recipe"]["epochs"]:
        print(f"continue from the last checkpoint with: simpsons train --resume {bundle_path.parent}")


def run_evaluate(args: argparse.Namespace) -> int:
    if args.boxes:
        return run_evaluate_detector(args)
    from simpsons import data as datasets
    from simpsons.evaluation import (
        evaluate,
        plot_confused_pairs,
        plot_confusion_matrix,
        plot_prediction_grid,
        record_test_accuracy,
    )
    from simpsons.files import write_json
    from simpsons.prediction import Predictor

    if args.write and (not args.model or str(args.model).endswith(".onnx")):
        raise SimpsonsError("--write needs --model BUNDLE, a .simpsons bundle (the shipped default model is never "
                            "rewritten)")
    predictor = Predictor.load(args.model, args.backend)
    images = datasets.load_images(args.data, predictor.image_size)
    if images.bad_files:
        print(datasets.describe_bad_files(images.bad_files))
    result = evaluate(predictor, images)
    if len(result.true) == 0:
        raise SimpsonsError(f"none of the images in {args.data} shows a character the model knows")
    print(result.report_text())
    for name, paths in result.unknown_paths.items():
        print(f"not counted: {len(paths)} image(s) of {name}, a character the model does not know")
    if result.unknown_answers:
        print(f"answered 'unknown' (below the bundle's threshold, or unfamiliar to its stranger detector) for "
              f"{result.unknown_answers} of {len(result.true)} images: they lower recall and accuracy, not precision")
    metrics = result.as_dict()
    print(f"accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}; top-1 accuracy of the best "
          f"guesses (thresholds ignored) {metrics['top1_accuracy']:.3f}")
    print("most confused: " + ", ".join(f"{pair['true']} -> {pair['predicted']} {pair['images']} "
                                        f"({pair['share_of_true']:.0%})" for pair in metrics["most_confused"][:4]))
    if args.json:
        write_json(metrics, args.json)
    if args.report_dir:
        Path(args.report_dir).mkdir(parents=True, exist_ok=True)
        plot_confusion_matrix(result, Path(args.report_dir) / "confusion_matrix.png")
        plot_prediction_grid(result, Path(args.report_dir) / "predictions_grid.png")
        plot_confused_pairs(result, Path(args.report_dir) / "confused_pairs.png")
        print(f"wrote confusion_matrix.png, predictions_grid.png and confused_pairs.png to {args.report_dir}")
    if args.write:
        record_test_accuracy(predictor, args.model, args.data, metrics)
        print(f"wrote the test accuracy ({metrics['top1_accuracy']:.3f} on {metrics['images']} images) to {args.model}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from simpsons.bundle import load_bundle, network_fingerprint
    from simpsons.detection.bundle import is_detector_bundle
    from simpsons.export import export_onnx, export_onnx_int8
    from simpsons.prediction import default_model_path

    if not args.onnx.endswith(".onnx"):
        raise SimpsonsError("the exported file name must end in .onnx")
    source = args.bundle or default_model_path()
    if is_detector_bundle(source):
        return run_export_detector(args, source)
    if args.int8 and not Path(args.int8).exists():
        raise SimpsonsError(f"dataset folder not found: {args.int8}")
    bundle = load_bundle(source)
    fingerprint = network_fingerprint(source)
    if args.int8:
        agreement, checked = export_onnx_int8(bundle, args.onnx, args.int8, source=fingerprint)
        print(f"int8 and float models give the same best guess on {agreement:.1%} of {checked} held-out pictures")
    else:
        export_onnx(bundle, args.onnx, source=fingerprint)
    print(f"wrote {args.onnx}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from simpsons.data import answer_in_batches, describe_bad_files, gather_files
    from simpsons.prediction import Predictor

    files = gather_files(args.paths)
    predictor = Predictor.load(args.model, args.backend)
    readable, predictions, bad = answer_in_batches(  # decoded by a pool of threads, ahead of the network
        predictor.prepare_files(files), PREDICT_BATCH,
        lambda batch: predictor.predict_pixels(np.stack(batch), top_k=args.top_k))
    if not readable:
        raise SimpsonsError(f"no readable image among {len(files)} file(s)")
    if args.json:
        for path, prediction in zip(readable, predictions):
            print(json.dumps({"path": str(path), **prediction.as_dict()}))
    else:
        _print_table(readable, predictions)
    if bad:
        print(describe_bad_files(bad), file=sys.stderr)
    return 0


def _print_table(paths: list[Path], predictions: list) -> None:
    """One row per image; a ``familiar`` column when the bundle has a stranger detector."""
    names = [str(p) for p in paths]
    width = min(60, max(len(n) for n in names + ["image"]))
    familiar = predictions[0].familiarity is not None
    print(f"{'image':<{width}}  {'character':<26} {'prob':>5}  " + ("familiar  " if familiar else "")
          + f"top {len(predictions[0].top_k)}")
    for name, prediction in zip(names, predictions):
        top = ", ".join(f"{n} {p:.2f}" for n, p in prediction.top_k)
        shown = name if len(name) <= width else "..." + name[-(width - 3):]
        familiarity = f"{prediction.familiarity:>8.2f}  " if familiar else ""
        print(f"{shown:<{width}}  {prediction.character:<26} {prediction.probability:>5.2f}  {familiarity}{top}")


def run_confidence(args: argparse.Namespace) -> int:
    from simpsons.backends import load_for_inference
    from simpsons.confidence import run_study, write_to_bundle
    from simpsons.files import write_json
    from simpsons.prediction import default_model_path

    if args.write and not args.model:
        raise SimpsonsError("--write needs --model BUNDLE (the shipped default model is never rewritten)")
    if args.write and not args.calibrate:
        raise SimpsonsError("--write needs --calibrate TRAIN_DATA: prior correction, thresholds and temperature "
                            "are chosen on its validation split, never on the data studied")
    if not Path(args.data).exists():
        raise SimpsonsError(f"dataset folder not found: {args.data}")
    bundle = load_for_inference(args.model or default_model_path(), "keras" if args.calibrate else args.backend)
    if args.flip is not None:
        bundle.test_time_flip = args.flip
    study = run_study(bundle, args.data, args.report_dir, character=args.character,
                      target_precision=args.target_precision, calibrate=args.calibrate, unknown=args.unknown,
                      prior_correction=args.prior_correction, log=print)
    if study.temperature is None:
        print("(--calibrate TRAIN_DATA fits the temperature, thresholds and prior correction on its validation split)")
    if args.write:
        write_to_bundle(bundle, study, args.model)
        study.payload["written_to"] = str(args.model)
        detector = ("" if study.detector is None
                    else f", a stranger detector (familiarity >= {study.detector.detector.threshold:.3f})")
        prior = ("no prior correction" if study.prior_correction is None
                 else f"prior correction strength {study.prior_correction.strength:g}")
        print(f"wrote {prior}, threshold {bundle.threshold:.2f}, {len(bundle.character_thresholds or {})} "
              f"per-character threshold(s), temperature {bundle.temperature:.4f}{detector}, flip test-time augmentation "
              f"{'on' if bundle.test_time_flip else 'off'} to {args.model}")
    if args.json:
        write_json({"model": str(args.model or default_model_path()), **study.payload}, args.json)
    return 0


def run_label(args: argparse.Namespace) -> int:
    from simpsons import labelling

    if args.action == "review":
        labelling.review(args.dataset)
        return 0
    if not args.into:
        raise SimpsonsError("label needs --into DATASET")
    if not args.auto and (args.detect or args.detector):
        raise SimpsonsError(f"{'--detect' if args.detect else '--detector'} works with --auto: "
                            "label VIDEOS --into DATASET --auto --detect")
    every = labelling.parse_every(args.every)
    options = dict(every=every, seed=args.seed, start_within=args.start_within, model=args.model)
    if args.auto:
        labelling.auto_label(args.videos, args.into, min_prob=args.min_prob, keep_unsure=args.keep_unsure,
                             backend=args.backend, detect=args.detect, detector=args.detector, **options)
    else:
        labelling.label_videos(args.videos, args.into, **options)
    return 0


def run_video(args: argparse.Namespace) -> int:
    from simpsons import video as videos
    from simpsons.detection.bundle import describe_detector
    from simpsons.detection.detector import Detector, detector_path
    from simpsons.frames import probe
    from simpsons.prediction import Predictor

    options = _video_options(args)
    model = args.detector if options.detect else args.model
    given = videos.Outputs(*(Path(p) if p else None for p in (args.timeline, args.srt, args.chart, args.out)))
    if len(args.inputs) == 1 and Path(args.inputs[0]).is_dir():
        from simpsons.series import run_series

        if options.detect:  # a missing or foreign detector fails here, not once per episode
            describe_detector(detector_path(model, option="--detector"))
        run_series(args.inputs[0], args.out_dir, given, options, model, args.workers, args.cluster)
        return 0
    if args.workers or args.cluster:
        raise SimpsonsError("--workers and --cluster take one folder of episodes")
    found = videos.find_videos(args.inputs)
    several = len(found) > 1
    derive = several or args.out_dir is not None or any(Path(p).is_dir() for p in args.inputs)
    plans = videos.plan_outputs(found, given, args.out_dir and Path(args.out_dir), derive)
    if not several:
        probe(plans[0][0])  # a broken file fails before the model loads
    answerer = Detector.load(model, option="--detector") if options.detect else Predictor.load(model, args.backend)
    failed = []
    for path, outputs in plans:
        try:
            result, written = videos.process_video(path, answerer, options, outputs, str(model or "default"))
        except SimpsonsError as error:
            if not several:
                raise
            print(f"simpsons: skipped: {error}", file=sys.stderr)
            failed.append(str(path))
            continue
        _print_video_result(result, options, written)
    if failed:
        raise SimpsonsError(f"{len(failed)} of {len(plans)} videos failed: {', '.join(failed)}")
    return 0


def _video_options(args: argparse.Namespace):  # -> simpsons.video.Options
    from simpsons import video as videos

    if args.detect:
        _refuse_classifier_options(args)
    elif args.detector:
        raise SimpsonsError("--detector chooses the detector of --detect: add --detect")
    try:
        crops = videos.CROPS if args.crops is None else videos.parse_crops(args.crops)
    except ValueError as error:
        raise SimpsonsError(str(error)) from None
    if args.sample_fps < 0:
        raise SimpsonsError("--sample-fps must be 0 (every frame) or more")
    if args.min_prob is not None and not 0 <= args.min_prob <= 1:
        raise SimpsonsError("--min-prob must be between 0 and 1")
    if args.smooth % 2 == 0:
        raise SimpsonsError("--smooth must be an odd number of samples")
    return videos.Options(args.sample_fps, crops, args.batch_frames, args.min_prob, args.smooth, args.detect)


def _refuse_classifier_options(args: argparse.Namespace) -> None:
    """``video --detect`` with an option of the classifier: one line saying what --detect uses instead."""
    if args.crops is not None:
        raise SimpsonsError("--crops cut frames for the classifier: --detect finds the characters in whole frames")
    for flag, value in (("--model", args.model), ("--backend", args.backend)):
        if value is not None:
            raise SimpsonsError(f"{flag} is the classifier's: with --detect, give the detector as --detector BUNDLE")


def _print_video_result(result, options, written: list) -> None:  # options: simpsons.video.Options
    from simpsons.video import summary_table

    info = result.info
    answers = "through the detector" if options.detect else f"x {len(options.crops)} crops"
    print(f"{info.path}: {info.width}x{info.height}, {info.fps:.2f} fps, {info.frames} frames, "
          f"{info.duration:.1f} s; {len(result.samples)} samples {answers} in {result.seconds:.1f} s "
          f"({result.frames_per_second:.0f} frames/s)")
    print(summary_table(result.segments, info))
    for path in written:
        print(f"wrote {path}")


def run_serve(args: argparse.Namespace) -> int:
    from simpsons.web import serve

    serve(args.model, args.host, args.port, args.dataset, args.picture_limit, args.clip_limit, args.backend,
          args.detector)
    return 0


COMMANDS = {"dataset": run_dataset, "train": run_train, "evaluate": run_evaluate, "predict": run_predict,
            "detect": run_detect,
            "confidence": run_confidence, "export": run_export, "label": run_label,
            "video": run_video, "serve": run_serve}

if __name__ == "__main__":
    sys.exit(main())
