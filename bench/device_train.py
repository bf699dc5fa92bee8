"""Train candidate models side by side on a lent GPU within one wall-clock budget.

Usage (on the GPU machine, from the repository root, with ``src`` importable):
    KERAS_BACKEND=jax python bench/device_train.py TRAIN.pack.npz --minutes 8.8 --out OUT
    KERAS_BACKEND=jax python bench/device_train.py TRAIN.pack.npz --only small_hr small_hr_robust hr_robust \
        --minutes 9 --out OUT
    KERAS_BACKEND=jax python bench/device_train.py TRAIN.pack.npz --only wide --epochs 40 \
        --second-stage-seconds 60 --minutes 4.2 --out OUT
    KERAS_BACKEND=jax python bench/device_train.py TRAIN.pack.npz --only small_hr_robust small_hr_robust_cutmix \
        --minutes 9 --out OUT
    KERAS_BACKEND=jax python bench/device_train.py TRAIN.pack.npz --only small_hr_robust small_robust resnet_robust \
        --minutes 9 --out OUT

Each candidate first runs a two-epoch probe (all probes at once, so they share the GPU as the real
runs will); its second epoch's speed sizes the cosine schedule to the time left. Each first stage
that finishes goes on at once to the ``fixres`` second stage (128 px) when its candidate asks for it.
The backend is ``$KERAS_BACKEND`` (default jax); if a probe fails there, everything runs on torch.
OUT gets each bundle as ``NAME.simpsons`` (``NAME-fixres.simpsons`` for the second stage; one over
15 MiB in ``.partN`` pieces: join them with ``cat``) and ``logs.tar.gz`` with every log,
``history.csv`` and ``run.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RUNS = Path("/tmp/runs")


@dataclass(frozen=True)
class Candidate:
    name: str
    preset: str
    arch: str | None
    max_epochs: int
    second_stage: bool
    augmentation: str | None = None  # the preset's own policy when None
    second_stage_augmentation: str | None = None
    mixing: str | None = None  # --mixing of the first stage (cutmix or mixup)


CANDIDATES = {
    c.name: c
    for c in (
        Candidate("small_hr", "strong", "resnet_small_pool", 200, True),
        Candidate("hr", "strong", "resnet_pool", 150, True),
        Candidate("article", "article", None, 200, False),
        Candidate("wide", "strong", "resnet_wide", 150, True),
        Candidate("small_hr_robust", "strong", "resnet_small_pool", 200, True, "robust", "light_robust"),
        Candidate("hr_robust", "strong", "resnet_pool", 150, True, "robust", "light_robust"),
        Candidate("small_hr_robust_cutmix", "strong", "resnet_small_pool", 300, True, "robust", "light_robust", "cutmix"),
        Candidate("wide_robust_cutmix", "strong", "resnet_wide", 150, True, "robust", "light_robust", "cutmix"),
        # without the pooling stem the blocks see 48x48 maps at 96 px, not 24x24 (on the CPU, resnet_small
        # reaches 0.960 balanced validation in one stage where resnet_small_pool stops near 0.94)
        Candidate("small_robust", "strong", "resnet_small", 200, True, "robust", "light_robust"),
        Candidate("resnet_robust", "strong", "resnet", 150, True, "robust", "light_robust"),
    )
}
# Reading and decoding the pack, building and compiling the network: 60-100 s a run on an H100,
# all counted by --time-limit
START_SECONDS = 90
PART_BYTES = 15 * 2**20  # files come back from the GPU machine in pieces of at most 16 MiB


def train_command(pack: str, preset: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "simpsons.cli", "train", pack, "--preset", preset, "--out", str(out), *extra]


def start(command: list[str], log: Path, backend: str, sharing: int) -> subprocess.Popen:
    """Start one training in the background; ``sharing`` runs share the GPU's memory."""
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1", "SIMPSONS_QUIET": "1",
           "XLA_PYTHON_CLIENT_MEM_FRACTION": str(round(0.9 / sharing, 2))}
    stamp(f"{backend}: {' '.join(command[2:])}")
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def candidate_options(candidate: Candidate) -> list[str]:
    """The first stage's --arch, --augmentation and --mixing, where the candidate names them."""
    options = ["--arch", candidate.arch] if candidate.arch else []
    options += ["--augmentation", candidate.augmentation] if candidate.augmentation else []
    return options + (["--mixing", candidate.mixing] if candidate.mixing else [])


def second_stage_options(candidate: Candidate) -> list[str]:
    return ["--augmentation", candidate.second_stage_augmentation] if candidate.second_stage_augmentation else []


def probe_run(name: str, backend: str) -> Path:
    return RUNS / f"probe-{name}-{backend}"


def probe(pack: str, candidates: list[Candidate], backend: str) -> dict[str, float] | None:
    """Images/s of each candidate's second epoch, all probes sharing the GPU; None if one failed."""
    jobs = {c.name: start(train_command(pack, c.preset, probe_run(c.name, backend), "--epochs", "2",
                                        *candidate_options(c)), probe_run(c.name, backend).with_suffix(".log"),
                          backend, len(candidates))
            for c in candidates}
    speeds = {}
    for name, job in jobs.items():
        if job.wait() != 0:
            print(f"probe {name} failed on {backend}: see {probe_run(name, backend).with_suffix('.log')}")
            for other in jobs.values():
                other.kill()
            return None
        with open(probe_run(name, backend) / "history.csv") as rows:
            speeds[name] = float(list(csv.DictReader(rows))[-1]["images_per_second"])
    print("probe images/s:", json.dumps({k: round(v) for k, v in speeds.items()}), flush=True)
    return speeds


def copy_back(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target``, in ``.partN`` pieces when it is too big to come back whole."""
    data = source.read_bytes()
    if len(data) <= PART_BYTES:
        target.write_bytes(data)
        return
    for number, offset in enumerate(range(0, len(data), PART_BYTES)):
        target.with_name(f"{target.name}.part{number}").write_bytes(data[offset : offset + PART_BYTES])


def stamp(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def first_stage_epochs(pack: str, candidates: list[Candidate], backend: str, seconds_left: Callable[[Candidate], float],
                       fixed: int | None) -> tuple[dict[str, int], str]:
    """Each candidate's epochs (``fixed``, or what its probe's speed fits in the seconds left after the
    probes) and the backend they ran on."""
    if fixed is not None:
        return {c.name: fixed for c in candidates}, backend
    speeds = probe(pack, candidates, backend)
    if speeds is None and backend != "torch":
        backend = "torch"
        speeds = probe(pack, candidates, backend)
    if speeds is None:
        sys.exit("every probe failed")
    run = json.loads((probe_run(candidates[0].name, backend) / "run.json").read_text())
    fits = {c.name: int(speeds[c.name] * seconds_left(c) * 0.75 / run["train_images"]) for c in candidates}
    return {c.name: max(2, min(c.max_epochs, fits[c.name])) for c in candidates}, backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pack")
    parser.add_argument("--minutes", type=float, required=True, help="wall-clock budget for everything")
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", nargs="+", choices=CANDIDATES, default=["small_hr", "hr", "article"])
    parser.add_argument("--epochs", type=int, help="first-stage epochs for every candidate (no probe)")
    parser.add_argument("--second-stage-seconds", type=float, default=120.0)
    args = parser.parse_args()
    candidates = [CANDIDATES[name] for name in args.only]
    began = time.monotonic()
    deadline = began + args.minutes * 60
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    RUNS.mkdir(parents=True, exist_ok=True)

    def seconds_left(candidate: Candidate) -> float:
        reserved = args.second_stage_seconds if candidate.second_stage else 0.0
        return deadline - time.monotonic() - reserved - START_SECONDS

    epochs, backend = first_stage_epochs(args.pack, candidates, os.environ.get("KERAS_BACKEND", "jax"),
                                         seconds_left, args.epochs)
    first = {c.name: start(train_command(args.pack, c.preset, RUNS / c.name, "--epochs", str(epochs[c.name]),
                                         "--time-limit", f"{seconds_left(c) / 60:.2f}", *candidate_options(c)),
                           RUNS / f"{c.name}.log", backend, len(candidates))
             for c in candidates}
    second = {}
    waiting = {c.name: c for c in candidates}
    while waiting:
        for name, candidate in [(n, c) for n, c in waiting.items() if first[n].poll() is not None]:
            del waiting[name]
            stamp(f"{name} finished with exit code {first[name].returncode}")
            bundle = RUNS / name / "model.simpsons"
            left = deadline - time.monotonic() - START_SECONDS
            if bundle.exists():
                copy_back(bundle, out / f"{name}.simpsons")
            if bundle.exists() and candidate.second_stage and left > START_SECONDS:
                second[name] = start(train_command(args.pack, "fixres", RUNS / f"{name}-fixres", "--init", str(bundle),
                                                   "--time-limit", f"{left / 60:.2f}", *second_stage_options(candidate)),
                                     RUNS / f"{name}-fixres.log", backend, len(candidates))
        time.sleep(2)
    for name, job in second.items():
        stamp(f"{name}-fixres finished with exit code {job.wait()}")
        if (RUNS / f"{name}-fixres" / "model.simpsons").exists():
            copy_back(RUNS / f"{name}-fixres" / "model.simpsons", out / f"{name}-fixres.simpsons")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for path in sorted(RUNS.rglob("*")):
            if path.suffix in (".log", ".csv", ".json", ".png"):
                tar.add(path, arcname=str(path.relative_to(RUNS)))
    print(f"wall seconds: {time.monotonic() - began:.0f}")


if __name__ == "__main__":
    main()
