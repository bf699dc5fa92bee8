"""The command line, in-process for speed, plus two real subprocesses for exit code and stderr."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import TEST_CHARACTERS, make_bundle, open_sample
from PIL import Image

from simpsons.bundle import read_description
from simpsons.cli import _with_label_action, build_parser, flag_of, main
from simpsons.detection.training import PRESETS as DETECTOR_PRESETS
from simpsons.errors import ParameterError
from simpsons.models import ARCHITECTURES, AUGMENTATIONS, MIXINGS
from simpsons.prediction import UNKNOWN, default_model_path
from simpsons.training import PRESETS


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("simpsons: error: ")
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- subprocesses


def run_installed(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).parent / "simpsons"
    assert executable.is_file(), f"the console script is not installed beside {sys.executable}"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the CLI must quieten TF itself
    return subprocess.run([str(executable), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_subprocess_missing_dataset_exits_2(tmp_path):
    result = run_installed("dataset", "stats", str(tmp_path / "nowhere"), cwd=tmp_path)

    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert "nowhere" in line
    assert result.stdout == ""


@pytest.mark.slow
def test_subprocess_corrupt_model_exits_2(tmp_path, sample_paths):
    corrupt = tmp_path / "broken.simpsons"
    corrupt.write_bytes(os.urandom(5000))
    result = run_installed("predict", "--model", str(corrupt), str(sample_paths[0]), cwd=tmp_path)

    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert "not a simpsons model bundle" in line and "broken.simpsons" in line
    assert result.stdout == ""


# --------------------------------------------------------------------------- predict


def test_predict_samples_with_the_shipped_model(capsys, samples_dir):
    known = read_description(default_model_path()).characters
    code, out, err = run_cli(capsys, "predict", samples_dir)

    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["image", "character", "prob", "familiar"]  # the shipped stranger detector's
    rows = lines[1:]
    assert len(rows) == 60
    for row, path in zip(rows, sorted(samples_dir.glob("*.jpg"))):
        assert row.split()[0].endswith(path.name)
        assert row.split()[1] in known + [UNKNOWN]
        assert 0.0 <= float(row.split()[3]) <= 1.0


# Measured with `simpsons predict samples` for the shipped model: top-1 accuracy 0.933 (56 of the 60 samples).
def test_shipped_model_accuracy_on_the_samples(capsys, samples_dir):
    code, out, err = run_cli(capsys, "predict", samples_dir, "--json")
    answers = [json.loads(line) for line in out.splitlines()]
    correct = [Path(a["path"]).stem.rsplit("_", 1)[0] == a["best_guess"] for a in answers]
    assert code == 0 and len(answers) == 60
    assert sum(correct) / len(correct) >= 0.9


def test_predict_json(capsys, samples_dir, tiny_bundle):
    code, out, err = run_cli(capsys, "predict", samples_dir, "--model", tiny_bundle, "--json", "--top-k", "4")

    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 60
    assert sorted(Path(r["path"]).name for r in records) == sorted(p.name for p in samples_dir.glob("*.jpg"))
    for record in records:
        assert set(record) >= {"path", "character", "probability", "top_k", "best_guess"}
        assert record["character"] in TEST_CHARACTERS
        assert len(record["top_k"]) == 4
        assert record["top_k"][0] == [record["character"], record["probability"]]
        values = [p for _, p in record["top_k"]]
        assert values == sorted(values, reverse=True)
        assert 0 < record["probability"] <= 1


def test_predict_files_and_table(capsys, sample_paths, tiny_bundle):
    code, out, err = run_cli(capsys, "predict", sample_paths[0], sample_paths[5], "--model", tiny_bundle, "--top-k", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].rstrip().endswith("top 2")
    assert len(lines) == 3
    assert lines[1].startswith(str(sample_paths[0])) or lines[1].startswith("...")


def test_predict_missing_path(capsys, tmp_path, tiny_bundle):
    code, out, err = run_cli(capsys, "predict", tmp_path / "nothing.jpg", "--model", tiny_bundle)
    assert code == 2
    assert "no such file or folder" in one_line_error(err)
    assert out == ""


@pytest.mark.parametrize("kind", ["random bytes", "text", "missing"])
def test_predict_with_a_bad_model(capsys, tmp_path, sample_paths, kind):
    model = tmp_path / "model.simpsons"
    if kind == "random bytes":
        model.write_bytes(os.urandom(3000))
    elif kind == "text":
        model.write_text("not a model")
    code, out, err = run_cli(capsys, "predict", sample_paths[0], "--model", model)
    assert code == 2
    assert str(model) in one_line_error(err)
    assert out == ""


def test_predict_folder_with_a_corrupt_image(capsys, tmp_path, sample_paths, tiny_bundle):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for path in sample_paths[:4]:
        shutil.copyfile(path, folder / path.name)
    (folder / "broken.jpg").write_bytes(sample_paths[4].read_bytes()[:300])
    (folder / ".DS_Store").write_bytes(b"\0\1\2")

    code, out, err = run_cli(capsys, "predict", folder, "--model", tiny_bundle, "--json")

    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(Path(r["path"]).name for r in records) == sorted(p.name for p in sample_paths[:4])
    assert "skipped 1 unreadable file(s)" in err
    assert "broken.jpg" in err
    assert ".DS_Store" not in err + out


def test_predict_folder_of_only_bad_files(capsys, tmp_path, tiny_bundle):
    (tmp_path / "a.jpg").write_text("no")
    code, out, err = run_cli(capsys, "predict", tmp_path, "--model", tiny_bundle)
    assert code == 2
    assert "no readable image" in one_line_error(err)


def test_predict_with_a_threshold_answers_unknown(capsys, tmp_path, sample_paths):
    sure = tmp_path / "never-sure.simpsons"
    make_bundle(sure, TEST_CHARACTERS, threshold=0.999)  # an untrained model is never that sure
    code, out, err = run_cli(capsys, "predict", *sample_paths[:3], "--model", sure, "--json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["character"] for r in records] == [UNKNOWN] * 3
    assert all(r["best_guess"] in TEST_CHARACTERS for r in records)


# --------------------------------------------------------------------------- evaluate


def test_evaluate_counts_unknown_answers_against_recall(capsys, tmp_path, samples_dir):
    """With the shipped model's network and a threshold, low answers become 'unknown'."""
    from simpsons.bundle import load_bundle, save_bundle

    bundle = load_bundle(default_model_path())
    bundle.threshold, bundle.character_thresholds, bundle.stranger_detector = None, None, None
    plain, strict = tmp_path / "plain.simpsons", tmp_path / "strict.simpsons"
    save_bundle(bundle, plain)
    plain_json, strict_json = tmp_path / "plain.json", tmp_path / "strict.json"
    assert run_cli(capsys, "evaluate", samples_dir, "--model", plain, "--json", plain_json)[0] == 0
    bundle.threshold = 0.9
    save_bundle(bundle, strict)
    code, out, _ = run_cli(capsys, "evaluate", samples_dir, "--model", strict, "--json", strict_json,
                           "--report-dir", tmp_path / "report")
    plain, metrics = json.loads(plain_json.read_text()), json.loads(strict_json.read_text())
    assert code == 0 and "answered 'unknown'" in out
    assert plain["unknown_answers"] == 0 and plain["accuracy_on_answered"] == plain["accuracy"]
    assert 0 < metrics["unknown_answers"] < 60
    assert metrics["accuracy"] < plain["accuracy"] <= metrics["accuracy_on_answered"]
    assert (tmp_path / "report" / "predictions_grid.png").is_file()


def test_evaluate_samples_with_reports(capsys, tmp_path, samples_dir, tiny_bundle):
    metrics = tmp_path / "metrics.json"
    reports = tmp_path / "reports"
    code, out, err = run_cli(capsys, "evaluate", samples_dir, "--model", tiny_bundle, "--json", metrics,
                             "--report-dir", reports)

    assert code == 0
    result = json.loads(metrics.read_text())
    assert result["images"] == 60
    assert result["characters"] == TEST_CHARACTERS
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (20, 20)
    assert (matrix.sum(axis=1) == 3).all()  # 3 samples of each character
    assert result["accuracy"] == pytest.approx(np.trace(matrix) / 60)
    assert 0 <= result["macro_f1"] <= 1
    assert set(result["per_class"]) == set(TEST_CHARACTERS)
    for name, scores in result["per_class"].items():
        assert scores["support"] == 3
        index = TEST_CHARACTERS.index(name)
        assert scores["recall"] == pytest.approx(matrix[index, index] / 3)
    assert result["unknown_characters"] == {}
    for name in ("confusion_matrix.png", "predictions_grid.png"):
        with Image.open(reports / name) as picture:
            assert picture.format == "PNG" and picture.width > 300
    assert "precision" in out and "recall" in out
    assert "not counted" not in out


def test_evaluate_write_stores_the_test_accuracy_in_the_bundle(capsys, tmp_path, samples_dir, tiny_bundle):
    model = tmp_path / "model.simpsons"
    shutil.copy(tiny_bundle, model)
    before = read_description(model)
    code, out, err = run_cli(capsys, "evaluate", samples_dir, "--model", model, "--json", tmp_path / "m.json",
                             "--write")
    assert code == 0, err
    measured = json.loads((tmp_path / "m.json").read_text())
    after = read_description(model)
    assert after.metadata["metrics"]["test_accuracy"] == measured["top1_accuracy"]
    assert after.metadata["metrics"]["test_images"] == 60
    assert after.metadata["metrics"]["test_data"] == str(samples_dir.resolve())
    assert replace(after, metadata={}).as_json() == replace(before, metadata={}).as_json()
    assert "wrote the test accuracy" in out

    for refused in ([], ["--model", tmp_path / "model.onnx"]):
        code, _, err = run_cli(capsys, "evaluate", samples_dir, *refused, "--write")
        assert code == 2 and "--write needs --model BUNDLE" in one_line_error(err)


def test_evaluate_sets_unknown_characters_apart(capsys, tmp_path, sample_paths):
    three = ["bart_simpson", "homer_simpson", "lisa_simpson"]
    model = tmp_path / "three.simpsons"
    make_bundle(model, three)
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in sample_paths:
        if path.stem.rsplit("_", 1)[0] in three + ["moe_szyslak"]:
            shutil.copyfile(path, folder / path.name)
    # someone the model has never heard of, drawn from a real frame
    open_sample(sample_paths[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "groundskeeper_willie_1.jpg")
    metrics = tmp_path / "metrics.json"

    code, out, err = run_cli(capsys, "evaluate", folder, "--model", model, "--json", metrics)

    assert code == 0
    assert "not counted: 3 image(s) of moe_szyslak" in out
    assert "not counted: 1 image(s) of groundskeeper_willie" in out
    result = json.loads(metrics.read_text())
    assert result["images"] == 9
    assert result["unknown_characters"] == {"moe_szyslak": 3, "groundskeeper_willie": 1}
    assert np.array(result["confusion_matrix"]).shape == (3, 3)
    assert np.array(result["confusion_matrix"]).sum() == 9


def test_evaluate_with_no_known_character(capsys, tmp_path, sample_paths):
    model = tmp_path / "two.simpsons"
    make_bundle(model, ["bart_simpson", "lisa_simpson"])
    folder = tmp_path / "others"
    folder.mkdir()
    for path in sample_paths[:3]:
        shutil.copyfile(path, folder / path.name)
    code, out, err = run_cli(capsys, "evaluate", folder, "--model", model)
    assert code == 2
    assert "none of the images" in one_line_error(err)


# --------------------------------------------------------------------------- dataset


def test_dataset_stats(capsys, tmp_path, samples_dir):
    plot = tmp_path / "counts.png"
    stats = tmp_path / "stats.json"
    code, out, err = run_cli(capsys, "dataset", "stats", samples_dir, "--plot", plot, "--json", stats)

    assert code == 0
    result = json.loads(stats.read_text())
    assert result["counts"] == {name: 3 for name in TEST_CHARACTERS}
    assert result["images"] == 60
    assert 40 <= result["near_duplicate_groups"] <= 60
    assert result["unreadable"] == []
    with Image.open(plot) as picture:
        assert picture.format == "PNG"
    assert "total" in out and " 60" in out
    assert "no unreadable files" in out
    for name in TEST_CHARACTERS:
        assert name in out


def test_dataset_stats_reports_unreadable_files(capsys, tmp_path, sample_paths):
    folder = tmp_path / "flat"
    folder.mkdir()
    for path in sample_paths[:3]:
        shutil.copyfile(path, folder / path.name)
    (folder / "abraham_grampa_simpson_7.jpg").write_bytes(b"")
    stats = tmp_path / "stats.json"
    code, out, err = run_cli(capsys, "dataset", "stats", folder, "--json", stats)
    assert code == 0
    assert "skipped 1 unreadable file(s)" in out
    result = json.loads(stats.read_text())
    assert [Path(item["path"]).name for item in result["unreadable"]] == ["abraham_grampa_simpson_7.jpg"]
    assert result["counts"] == {"abraham_grampa_simpson": 3}


def test_dataset_stats_missing_folder(capsys, tmp_path):
    code, out, err = run_cli(capsys, "dataset", "stats", tmp_path / "missing")
    assert code == 2
    assert "dataset folder not found" in one_line_error(err)


def test_dataset_pack(capsys, tmp_path, samples_dir):
    pack = tmp_path / "samples.pack.npz"
    code, out, err = run_cli(capsys, "dataset", "pack", samples_dir, "--out", pack, "--image-size", "24")
    assert code == 0
    assert "packed 60 images of 20 characters" in out
    code, out, err = run_cli(capsys, "dataset", "stats", pack)
    assert code == 0
    assert "total" in out and "60" in out
    code, out, err = run_cli(capsys, "dataset", "pack", samples_dir, "--out", tmp_path / "samples.npz")
    assert code == 2
    assert ".pack.npz" in one_line_error(err)


def test_dataset_pack_keeps_the_chosen_characters(capsys, tmp_path, samples_dir):
    pack = tmp_path / "two.pack.npz"
    code, out, err = run_cli(capsys, "dataset", "pack", samples_dir, "--out", pack, "--image-size", "24",
                             "--characters", "bart_simpson,lisa_simpson")
    assert code == 0
    assert "packed 6 images of 2 characters" in out
    code, out, err = run_cli(capsys, "dataset", "pack", samples_dir, "--out", tmp_path / "none.pack.npz",
                             "--min-images", "4")
    assert code == 2
    assert "no character has at least 4 images" in one_line_error(err)
    assert not (tmp_path / "none.pack.npz").exists()


# --------------------------------------------------------------------------- train


def test_train_with_too_few_images(capsys, tmp_path, samples_dir):
    code, out, err = run_cli(capsys, "train", samples_dir, "--out", tmp_path / "run", "--min-images", "1000")
    assert code == 2
    line = one_line_error(err)
    assert "no character has at least 1000 images" in line and "the most is 3" in line
    assert not (tmp_path / "run" / "model.simpsons").exists()


def test_train_without_out(capsys, samples_dir):
    code, out, err = run_cli(capsys, "train", samples_dir)
    assert code == 2
    assert "--out" in one_line_error(err)


@pytest.mark.parametrize("selection", [["--min-images", "1"], ["--characters", "bart_simpson,homer_simpson"]])
def test_train_on_too_few_images_for_a_split(capsys, tmp_path, samples_dir, selection):
    """The samples (3 frames per character) cannot be split shot-aware: a one-line error, not a traceback."""
    code, out, err = run_cli(capsys, "train", samples_dir, "--out", tmp_path / "run", *selection, "--epochs", "1",
                             "--image-size", "32")
    assert code == 2
    one_line_error(err)
    assert not (tmp_path / "run" / "model.simpsons").exists()


def test_train_unknown_character(capsys, tmp_path, samples_dir):
    code, out, err = run_cli(capsys, "train", samples_dir, "--out", tmp_path / "run", "--characters", "frank_grimes")
    assert code == 2
    assert "unknown character(s): frank_grimes" in one_line_error(err)


def test_train_list_presets(capsys):
    code, out, err = run_cli(capsys, "train", "--list-presets")
    assert code == 0
    presets, rest = out.split("\n\naugmentation policies (--augmentation):\n")
    policies, rest = rest.split("\n\nmixing policies (--mixing):\n")
    mixings, rest = rest.split("\n\narchitectures (--arch):\n")
    architectures, detectors = rest.split("\n\ndetector presets (train DATA --boxes FILE):\n")
    listed = [[(line.split(maxsplit=1) + [""])[:2] for line in part.splitlines()]
              for part in (presets, policies, mixings, architectures, detectors)]
    registered = [{name: recipe.description for name, recipe in PRESETS.items()}, AUGMENTATIONS, MIXINGS,
                  {name: architecture.description for name, architecture in ARCHITECTURES.items()},
                  {name: recipe.description for name, recipe in DETECTOR_PRESETS.items()}]
    for lines, names in zip(listed, registered):
        assert [name for name, _ in lines] == list(names)  # every registered name, in the registry's order
        assert all(description == names[name] for name, description in lines)


@pytest.mark.parametrize("option", ["--learning-rate", "--budget"])
def test_train_learning_rate_and_budget_must_be_above_zero(option, capsys, tmp_path, samples_dir):
    with pytest.raises(SystemExit) as raised:
        main(["train", str(samples_dir), "--out", str(tmp_path / "run"), option, "0"])
    assert raised.value.code == 2
    assert f"{option}: must be above 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_unknown_augmentation_policy(capsys, tmp_path, samples_dir):
    code, out, err = run_cli(capsys, "train", samples_dir, "--out", tmp_path / "run", "--augmentation", "wild")
    assert code == 2
    assert "unknown augmentation policy 'wild'; choose one of article, strong, robust" in one_line_error(err)
    assert not (tmp_path / "run").exists()


def test_train_resume_of_nothing(capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", "--resume", tmp_path)
    assert code == 2
    assert "no resumable run" in one_line_error(err)


@pytest.mark.slow
def test_train_stop_and_resume_end_to_end(capsys, tmp_path, training_folder, samples_dir):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", training_folder, "--out", run, "--min-images", "10", "--epochs", "2",
                             "--batch-size", "8", "--image-size", "32", "--test", samples_dir, "--time-limit", "1e-6",
                             "--augmentation", "robust", "--learning-rate", "3e-4", "--budget", "5")
    assert code == 0
    assert "time budget 5 min: an epoch takes about" in err and "so 2 epochs" in err  # at most --epochs
    assert "time limit reached after epoch 1" in err  # --time-limit wins over the budget's (progress: stderr)
    assert read_description(run / "model.simpsons").metadata["metrics"]["epochs_done"] == 1

    code, out, err = run_cli(capsys, "train", "--resume", run)
    assert code == 0
    with open(run / "history.csv") as handle:
        assert [line.split(",")[0] for line in handle.read().splitlines()[1:]] == ["0", "1"]
    metadata = read_description(run / "model.simpsons").metadata
    assert metadata["metrics"]["epochs_done"] == 2
    assert metadata["recipe"]["image_size"] == 32 and metadata["recipe"]["batch_size"] == 8
    assert metadata["recipe"]["augmentation"] == "robust"  # the resumed checkpoint kept its augmentation layers
    assert metadata["recipe"]["learning_rate"] == 3e-4
    assert metadata["budget"]["minutes"] == 5 and metadata["recipe"]["budget_minutes"] == 5

    code, out, err = run_cli(capsys, "train", training_folder, "--out", run, "--min-images", "10")
    assert code == 2
    assert "already holds a training run" in one_line_error(err)

    code, out, err = run_cli(capsys, "predict", samples_dir / "bart_simpson_0.jpg", "--model", run / "model.simpsons",
                             "--json")
    assert code == 0
    assert json.loads(out)["character"] in ["bart_simpson", "homer_simpson", "lisa_simpson"]


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["predict"])
    assert raised.value.code == 2
    with pytest.raises(SystemExit) as raised:
        main(["predict", "x.jpg", "--top-k", "0"])
    assert raised.value.code == 2


# --------------------------------------------------------------------------- the parser and the error messages


def test_label_review_is_a_subcommand_and_label_videos_the_default(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["label", "review", "--help"])
    assert raised.value.code == 0 and "DATASET" in capsys.readouterr().out
    parser = build_parser()
    short = parser.parse_args(_with_label_action(["label", "a.mp4", "--into", "set"]))
    long = parser.parse_args(_with_label_action(["label", "videos", "a.mp4", "--into", "set"]))
    assert vars(short) == vars(long) and short.action == "videos" and short.videos == ["a.mp4"]
    review = parser.parse_args(_with_label_action(["label", "review", "set"]))
    assert (review.action, review.dataset) == ("review", "set")


def test_library_errors_name_parameters_and_the_cli_names_flags(capsys, tmp_path):
    from simpsons.labelling import parse_every

    with pytest.raises(ParameterError) as raised:
        parse_every("9-3")
    assert str(raised.value).startswith("every wants") and "--every" not in str(raised.value)
    assert raised.value.naming(flag_of).startswith("--every wants")
    code, _, err = run_cli(capsys, "serve", "--port", "70000")
    assert code == 2 and "--port must be between 0 and 65535" in one_line_error(err)


def test_the_cli_names_the_flags_of_parameters_named_otherwise(capsys, tmp_path, samples_dir):
    """``budget_minutes`` is ``--budget``, ``ema_momentum`` ``--ema``, ``run_dir`` ``--out``, ``resume`` ``--resume``."""
    assert [flag_of(name) for name in ("budget_minutes", "ema_momentum", "run_dir", "init_bundle", "min_prob")] == [
        "--budget", "--ema", "--out", "--init", "--min-prob"]
    error = ParameterError("run_dir", "{name} is taken: {resume} it", mentions=("resume",))
    assert (str(error), error.naming(flag_of)) == ("run_dir is taken: resume it", "--out is taken: --resume it")
    code, _, err = run_cli(capsys, "train", samples_dir, "--out", tmp_path / "run", "--ema", "1.5")
    assert code == 2 and one_line_error(err) == "simpsons: error: --ema must be between 0 and 1 (e.g. 0.999)"


def test_the_cli_shows_library_log_messages_on_stderr(capsys, tmp_path):
    code, _, _ = run_cli(capsys, "dataset", "stats", tmp_path / "missing")
    assert code == 2
    logging.getLogger("simpsons.video").warning("no H.264 here")
    logging.getLogger("simpsons.web").info("serving here")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == ["simpsons: warning: no H.264 here", "simpsons: serving here"]
