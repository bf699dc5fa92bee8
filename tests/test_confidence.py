"""The confidence study: the three figures, threshold curves, recommendations, calibration, bundles, CLI."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import TEST_CHARACTERS, drawn_png, make_bundle, open_sample

from simpsons.bundle import PriorCorrection, StrangerDetector, load_bundle, read_description, save_bundle, unit_rows
from simpsons.data import load_images
from simpsons.cli import main
from simpsons.calibration import (
    PRIOR_STRENGTHS,
    balanced_accuracy,
    fit_prior_correction,
    fit_temperature,
    negative_log_likelihood,
)
from simpsons.confidence import (
    Objective,
    confidence_figures,
    expected_calibration_error,
    recommend_thresholds,
    summarise_figures,
    threshold_curves,
)
from simpsons import prediction as predictions
from simpsons.errors import SimpsonsError
from simpsons.open_set import (
    COMBINED_SCORE,
    DETECTOR_KEEPS,
    DETECTOR_SCORE,
    NEIGHBOUR_SCORE,
    DetectorInputs,
    combined_score,
    nearest_neighbour_similarity,
    open_set_figures,
    study_stranger_detector,
)
from simpsons.prediction import UNKNOWN, Predictor, apply_temperature, default_model_path

THREE = ["bart_simpson", "homer_simpson", "lisa_simpson"]
PLOTS = ["scatter_all.png", "threshold_overall.png", "threshold_per_character.png", "reliability.png"]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, labels drawn from softmax(logits) (so that is calibrated), and 3x over-confident probabilities."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, size=(4000, 5))
    calibrated = softmax(logits)
    labels = np.array([rng.choice(5, p=row) for row in calibrated])
    return logits, labels, softmax(3 * logits)


# --------------------------------------------------------------------------- the three figures


def test_figures_on_a_hand_made_matrix():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]])
    figures = confidence_figures(probabilities)
    np.testing.assert_allclose(figures[:, 0], [0.7, 0.4, 0.8, 1 / 3])
    np.testing.assert_allclose(figures[:, 1], [0.5, 0.0, 0.7, 0.0], atol=1e-12)
    np.testing.assert_allclose(figures[:, 2], [0.2624669, 0.0942809, 0.3299832, 0.0], atol=1e-6)
    summary = summarise_figures(figures, np.array([True, False, True, False]))
    assert summary["correct"]["count"] == 2 and summary["wrong"]["count"] == 2
    assert summary["correct"]["mean"]["best"] == pytest.approx(0.75)
    assert summary["correct"]["mean"]["gap"] == pytest.approx(0.6)
    assert summary["wrong"]["median"]["best"] == pytest.approx((0.4 + 1 / 3) / 2)
    assert summary["wrong"]["mean"]["std"] == pytest.approx(0.0942809 / 2)


def test_summary_of_an_empty_group_is_none():
    summary = summarise_figures(confidence_figures(np.array([[0.9, 0.1]])), np.array([True]))
    assert summary["wrong"] == {"count": 0, "mean": dict.fromkeys(("best", "gap", "std")),
                                "median": dict.fromkeys(("best", "gap", "std"))}


# --------------------------------------------------------------------------- threshold curves


def test_threshold_curves_by_hand():
    # best 0.9 right, 0.6 right, 0.5 wrong (ties go to the first: predicted a, true b), 0.7 right (b)
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5], [0.3, 0.7]])
    true = np.array([0, 0, 1, 1])
    curves = threshold_curves(probabilities, true, ["a", "b"])
    at = {t: i for i, t in enumerate(curves["thresholds"])}
    overall = curves["overall"]
    assert overall["precision"][at[0.0]] == pytest.approx(3 / 4) == overall["recall"][at[0.0]]
    assert overall["precision"][at[0.55]] == 1.0 and overall["recall"][at[0.55]] == pytest.approx(3 / 4)
    assert overall["precision"][at[0.65]] == 1.0 and overall["recall"][at[0.65]] == pytest.approx(2 / 4)
    assert overall["accepted"][at[0.65]] == 2
    assert overall["precision"][at[0.95]] == 0.0 and overall["recall"][at[0.95]] == 0.0  # nothing accepted
    a, b = curves["per_character"]["a"], curves["per_character"]["b"]
    assert a["precision"][at[0.0]] == pytest.approx(2 / 3) and a["recall"][at[0.0]] == 1.0
    assert b["precision"][at[0.0]] == 1.0 and b["recall"][at[0.0]] == pytest.approx(1 / 2)
    assert b["support"] == 2 and b["accepted"][at[0.71]] == 0


def test_curves_start_at_accuracy_and_recall_never_rises(synthetic):
    _, labels, probabilities = synthetic
    curves = threshold_curves(probabilities, labels, list("abcde"))
    accuracy = np.mean(probabilities.argmax(axis=1) == labels)
    assert curves["thresholds"][0] == 0.0 and curves["thresholds"][-1] == 1.0 and len(curves["thresholds"]) == 101
    assert curves["overall"]["precision"][0] == pytest.approx(accuracy)
    assert curves["overall"]["recall"][0] == pytest.approx(accuracy)
    for curve in [curves["overall"], *curves["per_character"].values()]:
        assert np.all(np.diff(curve["recall"]) <= 1e-12)
        assert np.all(np.diff(curve["accepted"]) <= 0)


def test_recommended_threshold_maximises_f1(synthetic):
    _, labels, probabilities = synthetic
    curves = threshold_curves(probabilities, labels, list("abcde"))
    recommended = recommend_thresholds(curves, Objective())
    f1 = curves["overall"]["f1"]
    assert f1[curves["thresholds"].index(recommended["threshold"])] == pytest.approx(max(f1))
    assert recommended["threshold"] > 0  # over-confident probabilities: dropping the unsure helps F1
    assert "F1" in recommended["objective"]
    assert "never below the global one" in recommended["objective"]
    floored = 0
    for name, threshold in recommended["character_thresholds"].items():
        own = curves["per_character"][name]["f1"]
        best_own = curves["thresholds"][int(np.argmax(own))]
        assert threshold == max(best_own, recommended["threshold"])
        floored += best_own < recommended["threshold"]
    assert 0 < floored < len(recommended["character_thresholds"])  # the floor matters for some, not all


def test_target_precision_picks_the_lowest_threshold_reaching_it(synthetic):
    _, labels, probabilities = synthetic
    curves = threshold_curves(probabilities, labels, list("abcde"))
    recommended = recommend_thresholds(curves, Objective(target_precision=0.7))
    assert recommended["reachable"] and "precision >= 0.7" in recommended["objective"]
    i = curves["thresholds"].index(recommended["threshold"])
    precision = curves["overall"]["precision"]
    assert precision[i] >= 0.7
    assert all(p < 0.7 for p in precision[:i])
    assert recommended["at_threshold"]["precision"] == precision[i]


def test_unreachable_target_precision_is_reported():
    probabilities = np.array([[1.0, 0.0], [0.8, 0.2], [0.3, 0.7]])
    true = np.array([1, 0, 1])  # the surest answer (probability 1) is wrong: precision 1 is never reached
    recommended = recommend_thresholds(threshold_curves(probabilities, true, ["a", "b"]), Objective(1.0))
    assert recommended["threshold"] is None and recommended["reachable"] is False
    assert recommended["characters_unreachable"] == ["a"]
    assert recommended["character_thresholds"] == {"b": 0.0}


# --------------------------------------------------------------------------- calibration


def test_temperature_one_is_a_no_op(synthetic):
    _, _, probabilities = synthetic
    np.testing.assert_allclose(apply_temperature(probabilities, 1.0), probabilities, atol=1e-6)


def test_temperature_is_exact_scaling_of_the_logits(synthetic):
    logits, _, probabilities = synthetic
    np.testing.assert_allclose(apply_temperature(probabilities, 3.0), softmax(logits), atol=1e-5)


def test_temperature_scaling_lowers_ece_on_held_out_data(synthetic):
    logits, labels, probabilities = synthetic
    sharp = 3 * logits
    fit, check = slice(0, 2000), slice(2000, None)
    temperature = fit_temperature(sharp[fit], labels[fit])
    assert 2.5 < temperature < 3.5  # the logits were made 3x too sharp
    calibrated = predictions.softmax(sharp[check], temperature)
    before = expected_calibration_error(probabilities[check], labels[check])
    after = expected_calibration_error(calibrated, labels[check])
    assert after < before / 2
    assert negative_log_likelihood(sharp[check], labels[check], temperature) < negative_log_likelihood(
        sharp[check], labels[check])
    assert np.array_equal(calibrated.argmax(axis=1), probabilities[check].argmax(axis=1))  # accuracy unchanged


def test_softmax_with_a_temperature_matches_temperature_scaled_probabilities(synthetic):
    logits, _, probabilities = synthetic
    np.testing.assert_allclose(predictions.softmax(3 * logits), probabilities, atol=1e-6)
    np.testing.assert_allclose(predictions.softmax(3 * logits, 3.0), apply_temperature(probabilities, 3.0), atol=1e-5)


def test_ece_by_hand():
    probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    true = np.array([0, 1, 0, 0])  # bin of 0.95: accuracy 0.5; bin of 0.55: accuracy 1
    assert expected_calibration_error(probabilities, true) == pytest.approx((2 * 0.45 + 2 * 0.45) / 4)


# --------------------------------------------------------------------------- bundle and predictor


@pytest.fixture(scope="module")
def pixels(sample_paths) -> np.ndarray:
    return np.stack([np.asarray(open_sample(p).resize((32, 32))) for p in sample_paths[:12]])


def test_bundle_with_temperature_and_thresholds_round_trips(tmp_path, pixels):
    path = tmp_path / "model.simpsons"
    bundle = make_bundle(path, TEST_CHARACTERS)
    raw = Predictor(load_bundle(path)).probabilities(pixels)
    bundle.threshold = 0.5
    bundle.character_thresholds = {"lisa_simpson": 0.2}
    bundle.temperature = 0.5
    save_bundle(bundle, path)
    description = read_description(path)
    assert description.temperature == 0.5 and description.character_thresholds == {"lisa_simpson": 0.2}
    loaded = load_bundle(path)
    assert (loaded.threshold, loaded.character_thresholds, loaded.temperature) == (0.5, {"lisa_simpson": 0.2}, 0.5)
    predictor = Predictor(loaded)
    assert predictor.threshold_for("lisa_simpson") == 0.2 and predictor.threshold_for("bart_simpson") == 0.5
    np.testing.assert_allclose(predictor.probabilities(pixels), apply_temperature(raw, 0.5), atol=1e-5)


def test_a_raw_predictor_ignores_the_bundles_temperature_and_thresholds(tmp_path, pixels):
    bundle = make_bundle(tmp_path / "model.simpsons", TEST_CHARACTERS, threshold=1.0)
    bundle.temperature, bundle.character_thresholds = 0.5, {"lisa_simpson": 1.0}
    raw, calibrated = Predictor(bundle, raw=True), Predictor(bundle)
    network = np.asarray(bundle.model.predict_on_batch(pixels.astype(np.float32)))
    np.testing.assert_allclose(raw.probabilities(pixels), network, atol=1e-6)
    np.testing.assert_allclose(calibrated.probabilities(pixels), predictions.softmax(raw.logits(pixels), 0.5),
                               atol=1e-6)
    assert {answer.character for answer in calibrated.decide(network)} == {UNKNOWN}
    assert UNKNOWN not in {answer.character for answer in raw.decide(network)}


def test_character_threshold_overrides_the_global_one(tmp_path, pixels):
    bundle = make_bundle(tmp_path / "model.simpsons", TEST_CHARACTERS)
    predictor = Predictor(bundle)
    probabilities = predictor.probabilities(pixels)
    row = probabilities[:1]
    name, best = TEST_CHARACTERS[int(row.argmax())], float(row.max())
    predictor.threshold = 1.0
    assert predictor.decide(row)[0].character == UNKNOWN  # below the global threshold
    predictor.character_thresholds = {name: best - 1e-4}
    assert predictor.decide(row)[0].character == name  # above its own threshold
    predictor.threshold = 0.0
    predictor.character_thresholds = {name: best + 1e-4}
    answer = predictor.decide(row)[0]
    assert answer.character == UNKNOWN and answer.best_guess == name and answer.probability == pytest.approx(best)


def test_a_format_1_bundle_without_temperature_or_character_thresholds_behaves_as_before(tmp_path, pixels):
    path = tmp_path / "old.simpsons"
    make_bundle(path, TEST_CHARACTERS, threshold=0.3)
    with zipfile.ZipFile(path) as zipped:
        description = json.loads(zipped.read("bundle.json"))
        model = zipped.read("model.keras")
    del description["temperature"], description["character_thresholds"]
    description["version"] = 1
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("bundle.json", json.dumps(description))
        zipped.writestr("model.keras", model)
    bundle = load_bundle(path)
    assert bundle.temperature is None and bundle.character_thresholds is None and bundle.threshold == 0.3
    predictor = Predictor(bundle)
    expected = np.asarray(bundle.model.predict_on_batch(pixels.astype(np.float32)))
    np.testing.assert_allclose(predictor.probabilities(pixels), expected, atol=1e-6)
    for answer, row in zip(predictor.decide(expected), expected):
        assert answer.character == (TEST_CHARACTERS[int(row.argmax())] if row.max() >= 0.3 else UNKNOWN)


def test_familiarity_by_hand():
    detector = StrangerDetector(np.array([1.0, -1.0]), 0.2, 0.5, answer_weight=2.0, answer="max logit")
    # unit rows [0.6, 0.8] and [1, 0]: 0.6 - 0.8 + 0.2 + 2 * 0 = 0 and 1 + 0.2 + 2 * 0.4 = 2 before the sigmoid
    np.testing.assert_allclose(detector.familiarity(np.array([[3.0, 4.0], [2.0, 0.0]]), np.array([0.0, 0.4])),
                               [0.5, 1 / (1 + np.exp(-2.0))], atol=1e-6)
    stored = StrangerDetector.from_json(detector.as_json())
    assert (stored.answer_weight, stored.answer) == (2.0, "max logit")
    # the figure it reads: the max logit here, or the best probability
    logits, probabilities = np.array([[1.0, 3.0], [-2.0, -1.0]]), np.array([[0.1, 0.9], [0.3, 0.7]])
    np.testing.assert_allclose(predictions.answer_figure(detector.answer, logits, probabilities), [3.0, -1.0])
    np.testing.assert_allclose(predictions.answer_figure("best probability", logits, probabilities), [0.9, 0.7])
    with pytest.raises(SimpsonsError, match="reads 'energy'"):
        StrangerDetector.from_json({**detector.as_json(), "answer": "energy"})


def test_the_predictor_gives_the_detector_its_best_probability(tmp_path, pixels):
    path = tmp_path / "model.simpsons"
    bundle = make_bundle(path, TEST_CHARACTERS)
    width = Predictor(bundle).features(pixels[:1]).shape[1]
    bundle.stranger_detector = StrangerDetector(np.zeros(width), -1.0, 0.5, 3.0, "best probability")
    save_bundle(bundle, path)
    predictor = Predictor(load_bundle(path))
    scores = predictor.score(pixels)
    expected = 1 / (1 + np.exp(-(3.0 * scores.probabilities.max(axis=1) - 1.0)))
    np.testing.assert_allclose(scores.familiarity, expected, atol=1e-6)


def test_the_predictor_gives_the_detector_its_max_logit(tmp_path, pixels):
    path = tmp_path / "model.simpsons"
    bundle = make_bundle(path, TEST_CHARACTERS)
    width = Predictor(bundle).features(pixels[:1]).shape[1]
    bundle.stranger_detector = StrangerDetector(np.zeros(width), -1.0, 0.5, 0.5, "max logit")
    bundle.temperature = 2.0  # the max logit is the network's own, whatever the temperature
    save_bundle(bundle, path)
    predictor = Predictor(load_bundle(path))
    expected = 1 / (1 + np.exp(-(0.5 * predictor.logits(pixels).max(axis=1) - 1.0)))
    np.testing.assert_allclose(predictor.score(pixels).familiarity, expected, atol=1e-5)


def test_the_stranger_detector_turns_unfamiliar_pictures_away(tmp_path, pixels):
    path = tmp_path / "model.simpsons"
    bundle = make_bundle(path, TEST_CHARACTERS)
    plain = Predictor(bundle)
    width = plain.features(pixels[:1]).shape[1]
    bundle.stranger_detector = StrangerDetector(np.zeros(width), 0.0, 0.6)  # familiarity 0.5 for all
    save_bundle(bundle, path)
    strict = Predictor(load_bundle(path))
    answers = strict.predict_pixels(pixels, top_k=1)
    assert {answer.character for answer in answers} == {UNKNOWN}
    assert [answer.best_guess for answer in answers] == [answer.character for answer in plain.predict_pixels(pixels)]
    assert answers[0].as_dict()["familiarity"] == pytest.approx(0.5)
    assert plain.predict_pixels(pixels[:1])[0].as_dict()["familiarity"] is None
    assert UNKNOWN not in {answer.character for answer in Predictor(load_bundle(path), raw=True).predict_pixels(pixels)}
    strict.stranger_detector.threshold = 0.4
    assert [a.character for a in strict.predict_pixels(pixels)] == [a.character for a in plain.predict_pixels(pixels)]


def test_a_bundle_with_flip_answers_a_picture_and_its_mirror_alike(tmp_path, pixels):
    path = tmp_path / "model.simpsons"
    bundle = make_bundle(path, TEST_CHARACTERS)
    mirrored = pixels[:, :, ::-1].copy()
    plain = Predictor(bundle)
    assert not np.allclose(plain.logits(pixels), plain.logits(mirrored), atol=1e-4)
    bundle.test_time_flip = True
    save_bundle(bundle, path)
    flipping = Predictor(load_bundle(path))
    np.testing.assert_allclose(flipping.logits(pixels), flipping.logits(mirrored), atol=1e-5)
    np.testing.assert_allclose(flipping.logits(pixels), (plain.logits(pixels) + plain.logits(mirrored)) / 2, atol=1e-4)
    assert read_description(path).test_time_flip is True


def test_a_broken_stranger_detector_is_refused(tmp_path):
    path = tmp_path / "model.simpsons"
    make_bundle(path, TEST_CHARACTERS)
    with zipfile.ZipFile(path) as zipped:
        description = json.loads(zipped.read("bundle.json"))
        model = zipped.read("model.keras")
    description["stranger_detector"] = {"weights": [1.0, 2.0]}
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("bundle.json", json.dumps(description))
        zipped.writestr("model.keras", model)
    with pytest.raises(SimpsonsError, match="not a simpsons model bundle.*stranger detector"):
        load_bundle(path)


def synthetic_features(rng, count: int, active: slice) -> np.ndarray:
    """Non-negative pooled features: noise, with the dimensions of ``active`` switched on."""
    features = rng.uniform(0, 0.2, (count, 40))
    features[:, active] += rng.uniform(0.5, 1.0, (count, active.stop - active.start))
    return features


def synthetic_pictures(rng, count: int, active: slice, sure: bool) -> DetectorInputs:
    """Features as above and answer figures: high for known characters, lower for strangers."""
    low, high = (0.6, 1.0) if sure else (0.3, 0.8)
    return DetectorInputs(synthetic_features(rng, count, active), rng.uniform(low, high, count))


def test_the_detector_study_measures_characters_it_never_saw():
    rng = np.random.default_rng(4)
    training = synthetic_features(rng, 300, slice(0, 20))
    validation, known = (synthetic_pictures(rng, n, slice(0, 20), sure=True) for n in (200, 100))
    # five unknown characters: each its own dimensions beyond the known ones
    parts = [synthetic_pictures(rng, 20, slice(20 + 4 * c, 24 + 4 * c), sure=False) for c in range(5)]
    strangers = DetectorInputs(np.concatenate([p.features for p in parts]),
                               np.concatenate([p.answer for p in parts]))
    names = [f"stranger_{c}" for c in range(5) for _ in range(20)]
    study = study_stranger_detector(training, validation, known, strangers, names)

    assert study.unknown_characters == 5 and len(study.strangers) == 100 and len(study.known) == 100
    figures = open_set_figures(np.zeros((100, 3)), np.zeros((100, 3)), more_scores={DETECTOR_SCORE: (
        study.known, study.strangers)})
    assert figures["scores"][DETECTOR_SCORE]["auroc"] > 0.99 and figures["best"] == DETECTOR_SCORE
    assert study.rejected_at_threshold > 0.9
    familiarity = study.detector.familiarity(validation.features, validation.answer)
    assert np.mean(familiarity >= study.detector.threshold) == pytest.approx(DETECTOR_KEEPS, abs=0.01)
    assert np.median(familiarity) > 0.8 and np.median(study.strangers) < 0.2
    stored = study.stored()
    assert len(stored.weights) == 40 and stored.fitted["unknown_characters"] == 5
    # the answer figure counts as much as the features: equal spreads on the validation pictures
    from_features = unit_rows(validation.features) @ study.detector.weights
    from_answer = study.detector.answer_weight * validation.answer
    assert from_answer.std() == pytest.approx(from_features.std(), rel=1e-6)
    assert study.detector.answer == "max logit"
    with pytest.raises(SimpsonsError, match="at least two unknown characters"):
        study_stranger_detector(training, validation, known, strangers.rows(np.arange(20)), names[:20])


# --------------------------------------------------------------------------- command line


def test_cli_study_of_the_shipped_model_on_the_samples(capsys, samples_dir, tmp_path):
    report = tmp_path / "report"
    code, out, _ = run_cli(capsys, "confidence", samples_dir, "--report-dir", report, "--json", tmp_path / "c.json",
                           "--character", "lisa_simpson")
    assert code == 0
    for name in [*PLOTS, "scatter_lisa_simpson.png"]:
        assert drawn_png(report / name).width > 200, name
    assert "0.83" in out and "0.092" in out and "recommended global threshold" in out and "best F1" in out
    payload = json.loads((tmp_path / "c.json").read_text())
    assert payload["images"] == 60
    assert len(payload["curves"]["thresholds"]) == 101 and len(payload["curves"]["per_character"]) == 20
    assert payload["curves"]["overall"]["recall"][0] == pytest.approx(payload["accuracy"])
    assert payload["recommended"]["objective"].startswith("best F1")
    assert payload["calibration"]["source"] == "bundle"  # the shipped model's stored temperature
    assert payload["calibration"]["temperature"] == pytest.approx(read_description(default_model_path()).temperature)
    assert payload["recommended"]["chosen_on"] == str(samples_dir)  # no --calibrate: chosen on the data itself
    assert payload["figures"]["article"]["wrong"]["gap"] == 0.092


def test_prior_correction_offsets():
    np.testing.assert_allclose(PriorCorrection(1.0, [3, 1]).offsets(), -np.log([0.75, 0.25]), rtol=1e-6)
    np.testing.assert_allclose(PriorCorrection(0.5, [3, 1]).offsets(), -0.5 * np.log([0.75, 0.25]), rtol=1e-6)
    assert not PriorCorrection(0.0, [900, 100, 5]).offsets().any()


def test_prior_correction_undoes_a_frequent_characters_head_start():
    """A network that adds the log of the training prior to fair scores: the correction takes it back."""
    rng = np.random.default_rng(0)
    counts = [900, 100]
    true = np.repeat([0, 1], 200)  # validation pictures spread evenly, like the test set
    fair = rng.normal(0, 1, (400, 2))
    fair[np.arange(400), true] += 1.5
    logits = fair + np.log(np.asarray(counts) / 1000)
    correction, curve = fit_prior_correction(logits, true, counts)
    scores = curve["validation_balanced_accuracy"]
    assert curve["strengths"] == PRIOR_STRENGTHS.tolist() and correction.training_counts == counts
    assert correction.strength >= 0.5 and scores[curve["strengths"].index(correction.strength)] == max(scores)
    assert max(scores) > scores[0] + 0.1  # without the correction, most pictures of the rare one are lost
    assert balanced_accuracy(logits + correction.offsets(), true) == max(scores)
    assert balanced_accuracy(fair, true) - max(scores) < 0.02


def test_prior_correction_leaves_a_sure_network_alone():
    true = np.array([0, 1, 2, 2, 1, 0])
    logits = np.eye(3)[true] * 20.0  # every picture right by a wide margin, at every strength
    correction, curve = fit_prior_correction(logits, true, [500, 50, 0])  # no training picture counts as one
    assert correction.strength == 0.0 and set(curve["validation_balanced_accuracy"]) == {1.0}
    assert correction.training_counts == [500, 50, 1]
    with pytest.raises(SimpsonsError, match="no images"):
        fit_prior_correction(logits[:0], true[:0], [500, 50, 1])


def test_cli_calibrate_and_write(capsys, tmp_path, training_folder):
    model = tmp_path / "three.simpsons"
    make_bundle(model, THREE)
    report = tmp_path / "report"
    code, out, err = run_cli(capsys, "confidence", training_folder, "--model", model, "--report-dir", report,
                             "--json", tmp_path / "c.json", "--calibrate", training_folder, "--write")
    assert code == 0, err
    payload = json.loads((tmp_path / "c.json").read_text())
    calibration = payload["calibration"]
    assert 0.05 <= calibration["temperature"] <= 20 and calibration["validation_images"] > 0
    assert calibration["validation_nll_after"] <= calibration["validation_nll_before"] + 1e-9
    assert all((report / name).exists() for name in PLOTS)
    written = load_bundle(model)
    assert written.threshold == payload["recommended"]["threshold"]
    assert payload["recommended"]["chosen_on"].startswith("shot-aware validation split of")
    assert set(payload["recommended"]["on_data"]) == {"precision", "recall", "f1", "accepted"}
    assert written.temperature == pytest.approx(calibration["temperature"])
    assert (written.character_thresholds or {}) == payload["recommended"]["character_thresholds"]
    assert "wrote prior correction strength" in out and "flip test-time augmentation off" in out
    assert not written.test_time_flip
    assert not payload["test_time_flip"] and 0.0 <= calibration["validation_accuracy"] <= 1.0
    prior = payload["prior_correction"]
    assert written.prior_correction.strength == prior["strength"] == max(
        prior["strengths"], key=lambda s: (prior["validation_balanced_accuracy"][prior["strengths"].index(s)], -s))
    assert sum(written.prior_correction.training_counts) + calibration["validation_images"] == 36


def test_cli_no_prior_correction_removes_the_bundles(capsys, tmp_path, training_folder):
    model = tmp_path / "three.simpsons"
    bundle = make_bundle(model, THREE)
    bundle.prior_correction = PriorCorrection(1.0, [100, 10, 1])
    save_bundle(bundle, model)
    code, out, err = run_cli(capsys, "confidence", training_folder, "--model", model, "--report-dir", tmp_path / "r",
                             "--json", tmp_path / "c.json", "--calibrate", training_folder, "--no-prior-correction",
                             "--write")
    assert code == 0, err
    assert "wrote no prior correction" in out and "prior correction: strength" not in out
    assert load_bundle(model).prior_correction is None
    payload = json.loads((tmp_path / "c.json").read_text())
    assert payload["prior_correction"] is None
    # the study answered without the correction: its accuracy is the raw network's
    raw = Predictor(replace(bundle, prior_correction=None), raw=True)
    pictures = load_images(training_folder, bundle.image_size)
    assert payload["accuracy"] == pytest.approx(np.mean(raw.logits(pictures.images).argmax(axis=1) == pictures.labels))


def test_cli_flip_is_studied_and_written(capsys, tmp_path, training_folder):
    model = tmp_path / "three.simpsons"
    make_bundle(model, THREE)
    code, out, err = run_cli(capsys, "confidence", training_folder, "--model", model, "--report-dir", tmp_path / "r",
                             "--json", tmp_path / "c.json", "--calibrate", training_folder, "--flip", "--write")
    assert code == 0, err
    assert json.loads((tmp_path / "c.json").read_text())["test_time_flip"] and "mirror image" in out
    assert load_bundle(model).test_time_flip
    code, out, err = run_cli(capsys, "confidence", training_folder, "--model", model, "--report-dir", tmp_path / "r",
                             "--calibrate", training_folder, "--no-flip", "--write")
    assert code == 0 and not load_bundle(model).test_time_flip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--write"], "--write needs --model"),
        (["--model", "MODEL", "--write"], "--write needs --calibrate"),
        (["--character", "maggie_simpson"], "does not know the character"),
        (["--target-precision", "0"], "(0, 1]"),
        (["--target-precision", "1.5"], "(0, 1]"),
    ],
)
def test_cli_bad_input_exits_2(capsys, tmp_path, samples_dir, tiny_bundle, extra, message):
    model = [] if "--write" in extra else ["--model", tiny_bundle]
    extra = [tiny_bundle if word == "MODEL" else word for word in extra]
    code, _, err = run_cli(capsys, "confidence", samples_dir, *model, "--report-dir", tmp_path, *extra)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("simpsons: error: ") and message in lines[0]


def test_cli_missing_data_exits_2(capsys, tmp_path, tiny_bundle):
    code, _, err = run_cli(capsys, "confidence", tmp_path / "nowhere", "--model", tiny_bundle, "--report-dir", tmp_path)
    assert code == 2 and "not found" in err


def test_cli_unreachable_target_is_reported(capsys, tmp_path, samples_dir):
    code, out, _ = run_cli(capsys, "confidence", samples_dir, "--report-dir", tmp_path, "--json", tmp_path / "c.json",
                           "--target-precision", "1")
    payload = json.loads((tmp_path / "c.json").read_text())
    assert code == 0
    if payload["recommended"]["reachable"]:
        assert payload["recommended"]["at_threshold"]["precision"] == 1.0
    else:
        assert "unreachable" in out


# --------------------------------------------------------------------------- the real data set


@pytest.mark.slow
@pytest.mark.shared
def test_study_of_the_shipped_model_on_the_real_test_set(capsys, tmp_path, shared_data: Path):
    root = shared_data / "simpsons"
    code, out, err = run_cli(capsys, "confidence", root / "kaggle_simpson_testset", "--calibrate",
                             root / "simpsons_dataset", "--unknown", root / "simpsons_dataset",
                             "--report-dir", tmp_path, "--json", tmp_path / "c.json")
    assert code == 0, err
    payload = json.loads((tmp_path / "c.json").read_text())
    assert {"images", "accuracy", "figures", "curves", "recommended", "calibration", "plots"} <= set(payload)
    assert payload["images"] == 801
    # the shipped bundle carries the prior correction this study chooses (0.1: MODEL_CARD.md)
    assert payload["prior_correction"]["strength"] == read_description(default_model_path()).prior_correction.strength \
        == 0.1
    calibration = payload["calibration"]
    assert {"temperature", "ece_before", "ece_after", "validation_images"} <= set(calibration)
    assert calibration["ece_after"] <= calibration["ece_before"]
    assert payload["recommended"]["threshold"] is not None
    assert all((tmp_path / name).exists() for name in PLOTS)
    # MODEL_CARD.md: 789 pictures of the 22 characters it was not trained on; AUROC 0.900 by the best
    # probability, 0.885 by the 10th nearest training picture, 0.899 by the two combined, 0.904 by the
    # stranger detector (cross-fitted); with the thresholds it turns away 52% of them (35% without it)
    open_set = payload["open_set"]
    assert open_set["unknown_images"] == 789 and len(open_set["per_unknown_character"]) == 22
    assert open_set["scores"]["best probability"]["auroc"] >= 0.89
    assert open_set["scores"][NEIGHBOUR_SCORE]["auroc"] >= 0.87
    assert open_set["scores"][COMBINED_SCORE]["auroc"] >= 0.89
    assert open_set["scores"][DETECTOR_SCORE]["auroc"] >= 0.895
    # the detector reads the features and the max logit: keeping 95% of known pictures it turns away more
    # unknown ones than the best probability does (52% against 44%)
    assert (open_set["scores"][DETECTOR_SCORE]["unknown_rejected_share"]
            > open_set["scores"]["best probability"]["unknown_rejected_share"] + 0.05)
    assert not payload["test_time_flip"]  # the shipped bundle answers from the picture alone
    detector = open_set["stranger_detector"]
    assert detector["unknown_rejected_with_thresholds"] >= detector["unknown_rejected_by_thresholds"] + 0.06
    assert detector["validation_rejected_with_thresholds"] <= 0.06
    # familiarity is a chance (Platt-scaled), not a saturated sigmoid: the threshold reads as a number
    assert 0.01 < detector["threshold"] < 0.5
    # the shipped bundle carries the detector this study fits
    assert read_description(default_model_path()).stranger_detector.threshold == pytest.approx(
        detector["threshold"], abs=0.005)


def test_open_set_figures_separate_confident_known_from_flat_unknown():
    rng = np.random.default_rng(0)
    known = rng.normal(0, 0.1, (50, 4))
    known[np.arange(50), rng.integers(0, 4, 50)] = 6.0  # one strong logit
    unknown = rng.normal(0, 0.1, (40, 4))  # weak, flat logits
    figures = open_set_figures(known, unknown)
    assert figures["known_images"] == 50 and figures["unknown_images"] == 40
    assert set(figures["scores"]) == {"best probability", "gap between the two best", "max logit", "energy"}
    for score in figures["scores"].values():
        assert score["auroc"] == pytest.approx(1.0)
        assert score["unknown_rejected_share"] == pytest.approx(1.0)
    # swapped roles: the unknown images look surer than the known ones
    assert open_set_figures(unknown, known)["scores"]["best probability"]["auroc"] == pytest.approx(0.0)


def test_nearest_neighbour_similarity_by_hand():
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    features = np.array([[2.0, 0.0], [0.0, -1.0]])
    np.testing.assert_allclose(nearest_neighbour_similarity(reference, features, k=1), [1.0, 0.0], atol=1e-6)
    # the second most similar: [1, 1] for both rows (cos 45 and 135 degrees)
    np.testing.assert_allclose(nearest_neighbour_similarity(reference, features, k=2), [np.sqrt(0.5), -np.sqrt(0.5)],
                               atol=1e-6)
    # k above the number of reference rows: the least similar one
    np.testing.assert_allclose(nearest_neighbour_similarity(reference, features, k=10), [0.0, -1.0], atol=1e-6)


def test_open_set_figures_rank_the_unknown_characters_and_take_extra_scores():
    rng = np.random.default_rng(2)
    known = rng.normal(0, 0.1, (40, 4))
    known[np.arange(40), rng.integers(0, 4, 40)] = 6.0
    lookalike = known[:20] + rng.normal(0, 0.1, (20, 4))  # as sure as the known ones
    stranger = rng.normal(0, 0.1, (10, 4))  # flat
    names = ["carl_carlson"] * 20 + ["otto_mann"] * 10
    neighbours = (rng.uniform(size=40), rng.uniform(size=30))  # a useless extra score
    figures = open_set_figures(known, np.r_[lookalike, stranger], unknown_names=names,
                               more_scores={NEIGHBOUR_SCORE: neighbours})

    assert 0.2 < figures["scores"][NEIGHBOUR_SCORE]["auroc"] < 0.8 and figures["best"] != NEIGHBOUR_SCORE
    ranked = figures["per_unknown_character"]
    assert list(ranked) == ["carl_carlson", "otto_mann"]  # hardest first
    assert ranked["carl_carlson"]["images"] == 20 and ranked["otto_mann"]["images"] == 10
    assert ranked["carl_carlson"]["auroc"] < 0.8 and ranked["otto_mann"]["auroc"] == pytest.approx(1.0)
    assert "per_unknown_character" not in open_set_figures(known, stranger)


def test_combined_score_standardises_each_part_on_known_pictures():
    known_probability, known_similarity = np.array([0.8, 0.9, 1.0]), np.array([0.5, 0.6, 0.7])
    on_known = combined_score(known_probability, known_similarity, known_probability, known_similarity)
    assert on_known.mean() == pytest.approx(0.0) and np.all(np.diff(on_known) > 0)
    # one standard deviation below in each score is two below in the sum, whatever the scales
    std_p, std_s = known_probability.std(), known_similarity.std()
    assert combined_score(np.array([0.9 - std_p]), np.array([0.6 - std_s]), known_probability,
                          known_similarity) == pytest.approx([-2.0])


def test_the_combined_score_separates_what_each_part_misses():
    """Unknown pictures that look known by one score or the other, never both: the sum separates them."""
    rng = np.random.default_rng(3)
    known_logits = rng.normal(0, 0.1, (60, 4))
    known_logits[np.arange(60), rng.integers(0, 4, 60)] = 5.0
    unsure = rng.normal(0, 0.1, (30, 4))  # flat probabilities, but close to training pictures
    sure = known_logits[:30] + rng.normal(0, 0.1, (30, 4))  # confident, but far from training pictures
    known_similarity = rng.uniform(0.7, 1.0, 60)
    unknown_similarity = np.r_[rng.uniform(0.7, 1.0, 30), rng.uniform(0.0, 0.3, 30)]
    reference = (rng.uniform(0.95, 1.0, 50), rng.uniform(0.7, 1.0, 50))
    combined = tuple(combined_score(softmax(logits).max(axis=1), similarity, *reference)
                     for logits, similarity in ((known_logits, known_similarity),
                                                (np.r_[unsure, sure], unknown_similarity)))
    figures = open_set_figures(known_logits, np.r_[unsure, sure], more_scores={
        NEIGHBOUR_SCORE: (known_similarity, unknown_similarity), COMBINED_SCORE: combined})
    scores = figures["scores"]
    assert scores[COMBINED_SCORE]["auroc"] > max(scores["best probability"]["auroc"], scores[NEIGHBOUR_SCORE]["auroc"])
    assert figures["best"] == COMBINED_SCORE


def test_energy_sees_what_probabilities_cannot():
    """Logits shifted by a constant give the same probabilities but a higher energy and max logit."""
    rng = np.random.default_rng(1)
    unknown = rng.normal(0, 1, (30, 5))
    known = unknown + 4.0
    scores = open_set_figures(known, unknown)["scores"]
    assert scores["best probability"]["auroc"] == pytest.approx(0.5)
    assert scores["energy"]["auroc"] == pytest.approx(1.0) and scores["max logit"]["auroc"] == pytest.approx(1.0)


def test_confidence_cli_measures_unknown_characters(capsys, tmp_path: Path, sample_paths):
    model = tmp_path / "three.simpsons"
    make_bundle(model, THREE)
    known, strangers = tmp_path / "known", tmp_path / "strangers"
    known.mkdir(), strangers.mkdir()
    for path in sample_paths:
        target = known if path.stem.rsplit("_", 1)[0] in THREE else strangers
        target.joinpath(path.name).write_bytes(path.read_bytes())
    code = main(["confidence", str(known), "--model", str(model), "--report-dir", str(tmp_path / "report"),
                 "--unknown", str(strangers), "--json", str(tmp_path / "c.json")])
    assert code == 0
    open_set = json.loads((tmp_path / "c.json").read_text())["open_set"]
    assert open_set["known_images"] == 9 and open_set["unknown_images"] == 51
    assert 0.0 <= open_set["scores"]["best probability"]["auroc"] <= 1.0
    assert (tmp_path / "report" / "open_set.png").is_file()
    assert sum(figure["images"] for figure in open_set["per_unknown_character"].values()) == 51
    assert NEIGHBOUR_SCORE not in open_set["scores"]  # it needs the training pictures (--calibrate)
    assert main(["confidence", str(known), "--model", str(model), "--report-dir", str(tmp_path / "r2"),
                 "--unknown", str(known)]) == 2
    assert "no unknown images" in capsys.readouterr().err


def test_confidence_cli_measures_the_distance_to_the_training_pictures(capsys, tmp_path, sample_paths, training_folder):
    model = tmp_path / "three.simpsons"
    make_bundle(model, THREE)
    strangers = tmp_path / "strangers"
    strangers.mkdir()
    for path in sample_paths:
        if path.stem.rsplit("_", 1)[0] not in THREE:
            strangers.joinpath(path.name).write_bytes(path.read_bytes())
    code, out, err = run_cli(capsys, "confidence", training_folder, "--model", model, "--report-dir", tmp_path / "r",
                             "--calibrate", training_folder, "--unknown", strangers, "--json", tmp_path / "c.json")
    assert code == 0, err
    open_set = json.loads((tmp_path / "c.json").read_text())["open_set"]
    assert open_set["known_images"] == 36 and open_set["unknown_images"] == 51
    score = open_set["scores"][NEIGHBOUR_SCORE]
    assert 0.0 <= score["auroc"] <= 1.0 and 0.0 <= score["unknown_rejected_share"] <= 1.0
    assert NEIGHBOUR_SCORE in out and "hardest unknown characters" in out
    assert 0.0 <= open_set["scores"][COMBINED_SCORE]["auroc"] <= 1.0 and COMBINED_SCORE in out
    assert 0.0 <= open_set["scores"][DETECTOR_SCORE]["auroc"] <= 1.0 and "stranger detector" in out
    assert read_description(model).stranger_detector is None  # no --write
    code, _, err = run_cli(capsys, "confidence", training_folder, "--model", model, "--report-dir", tmp_path / "r",
                           "--calibrate", training_folder, "--unknown", strangers, "--write")
    assert code == 0, err
    stored = read_description(model).stranger_detector
    assert stored.fitted["unknown_characters"] == 17 and 0.0 < stored.threshold < 1.0
    code, out, err = run_cli(capsys, "predict", training_folder, "--model", model, "--json")
    answers = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(answers) == 36 and all(0.0 <= answer["familiarity"] <= 1.0 for answer in answers)
