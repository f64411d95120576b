"""Every feature with every other (issues 18 and 20), on the tiny embedded models: each pair of FEATURES runs to a
finite video of the right shape; the defined reductions hold bit for bit in every join where they apply (TeaCache or
EasyCache at threshold 0 == no cache; TeaCache's context-every-step option with no step skipped == no cache; a
one-window long video == generate; one region covering everything == no regions; a job file == the same run; NAG
scale 0, MagCache threshold 0, denoise 1 and a flat strength curve == today); two gloo processes == one process within
1e-5 with each feature; the refused pairs say why and what to do instead. The step caches are one choice a run
(EXCLUSIVE).

Rows live in tests/combination_cases.py (FEATURES, REDUCTIONS): add one there and every pair with it is tested."""

import json
import os
import sys
import tempfile
from dataclasses import replace
from itertools import combinations

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))
import combination_cases as C  # noqa: E402

PAIRS = [p for p in combinations(C.FEATURES, 2) if frozenset(p) not in C.EXCLUSIVE | C.REFUSED.keys()]
TOLERANCE = 1e-5


def spec_of(*names: str) -> C.Spec:
    spec = C.Spec()
    for name in names:
        spec = C.FEATURES[name](spec)
    return spec


# (reduction, feature or None): where the reduction changes the run (a long feature has no one-window form)
REDUCTION_CASES = [(r, f) for r in C.REDUCTIONS for f in (None, *C.FEATURES)
                   if C.REDUCTIONS[r](spec_of(*filter(None, [f]))) != spec_of(*filter(None, [f]))]


@pytest.fixture(scope="module")
def vae():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they give (and the matrix stays under 2 min)
    yield C.tiny_vae()
    torch.set_num_threads(threads)


@pytest.mark.parametrize("pair", PAIRS, ids=" + ".join)
def test_every_pair_runs_to_a_finite_video_of_the_right_shape(pair, vae):
    spec = spec_of(*pair)
    video = C.run(spec, vae)
    assert video.shape == (3, spec.length, *C.SIZE)
    assert video.isfinite().all()


@pytest.mark.parametrize(("reduction", "feature"), REDUCTION_CASES, ids=lambda v: str(v))
def test_reductions_hold_bit_for_bit(reduction, feature, vae):
    spec = spec_of(*filter(None, [feature]))
    assert torch.equal(C.run(C.REDUCTIONS[reduction](spec), vae), C.run(spec, vae))


@pytest.mark.parametrize("name", list(C.ADD_ONS_OFF))
def test_each_add_on_off_is_today_bit_for_bit(name, vae):
    """One at a time (the reduction above switches them off together): NAG scale 0, MagCache threshold 0, denoise 1
    with an init video given, a flat curve == the plain run, bit for bit."""
    assert torch.equal(C.run(replace(C.Spec(), **{name: C.ADD_ONS_OFF[name]}), vae), C.run(C.Spec(), vae))


def test_every_feature_changes_the_run(vae):
    """The matrix tests joins, not no-ops: each feature alone changes the plain run's video (or its length)."""
    plain = C.run(C.Spec(), vae)
    for name in C.FEATURES:
        spec = spec_of(name)
        video = C.run(spec, vae)
        if name == "job file":  # the job is the same run, read back from its file (a reduction above)
            continue
        assert video.shape != plain.shape or not torch.equal(video, plain), name


def test_carry_guidance_in_fused_mode_is_fused_mode(vae):
    """Fused windows carry no frames, so carry guidance has nothing to guide against: the same video."""
    fused = spec_of("fused")
    assert torch.equal(C.run(spec_of("fused", "carry guidance"), vae), C.run(fused, vae))


def test_refused_pairs_name_both_features():
    assert set(C.REFUSED) == {frozenset(p) for p in LIBRARY_REFUSED}


def test_command_line_adds_no_regions_to_a_job(tmp_path):
    """A job carries its regions (Save VACE Job's regions input) with its encoded prompts: --region cannot add any."""
    from vace_core.__main__ import main

    with pytest.raises(SystemExit, match="--region and --job cannot be combined: a job file carries its prompts "
                                         "and regions already encoded"):
        main(["run", "--job", str(tmp_path / "job.safetensors"), "--region", "a cat", str(tmp_path / "mask.png"),
              "--out", str(tmp_path / "out.mp4")])


LIBRARY_REFUSED = [("timeline", "fused"), ("timeline", "regions"),
                   *((variant, fast) for variant in ("slg", "cfg-zero*", "apg")
                     for fast in ("cfg 1 + lcm", "nag at cfg 1"))]


@pytest.mark.parametrize("pair", LIBRARY_REFUSED, ids=" + ".join)
def test_refused_library_pairs_say_what_to_do(pair):
    """The pairs the library refuses: the message names both features and what to do instead."""
    from vace_core.errors import VaceError

    with pytest.raises(VaceError, match=C.REFUSED[frozenset(pair)]):
        C.run(spec_of(*pair), C.tiny_vae())


@pytest.fixture(scope="module")
def parallel_errors():
    """{feature: each rank's relative error of the 2-process run against one process}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "errors")
        mp.get_context("forkserver").set_forkserver_preload(["combination_cases"])
        mp.start_processes(C.worker, args=(os.path.join(tmp, "store"), out), nprocs=2, start_method="forkserver")
        per_rank = [json.load(open(f"{out}.{r}")) for r in range(2)]
    return {k: [r[k] for r in per_rank] for k in per_rank[0]}


@pytest.mark.parametrize("feature", list(C.PARALLEL))
def test_two_processes_equal_one_with_each_feature(parallel_errors, feature):
    assert max(parallel_errors[feature]) < TOLERANCE, parallel_errors[feature]
