"""Multi-process sampling equals one process (gloo on CPU, torch.multiprocessing): Ulysses, ring, USP,
CFG parallel and FSDP2 with 1-2 VACE streams, reference frames, token counts that do not divide by the
ranks, head counts that do not divide (ring), attention biases; a whole `generate`; impossible layouts.

One spawn per world size runs every case of tests/distributed_cases.py; the tests read the per-case errors."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from vace_core.__main__ import main
from vace_core.distributed import init_parallel, plan_degrees
from vace_core.errors import VaceError
from vace_core.job import save_job
from vace_core.video_io import read_video

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, os.path.dirname(__file__))
import distributed_cases as cases  # noqa: E402
from test_job import two_stream_job  # noqa: E402


@pytest.fixture(scope="module", params=sorted(cases.CASES))
def runs(request):
    """(world size, [each rank's {"errors": {case: relative error}, "bytes": {case: [sent, predicted]}}])."""
    world = request.param
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "errors")
        # forkserver: the server imports torch and the cases once; every rank of every world forks from it
        mp.get_context("forkserver").set_forkserver_preload(["distributed_cases"])
        mp.start_processes(cases.worker, args=(world, os.path.join(tmp, "store"), out), nprocs=world,
                           start_method="forkserver")
        per_rank = [json.load(open(f"{out}.{r}")) for r in range(world)]
    return world, per_rank


def test_distributed_forward_equals_one_process(runs):
    world, per_rank = runs
    found = {k: [r["errors"][k] for r in per_rank] for k in per_rank[0]["errors"]}
    expected = set(cases.CASES[world]) | {2: {"ring + fsdp2, fp8 checkpoint", "ring + fsdp2, GGUF checkpoint",
                                              "long video, 2 windows"}, 3: set(),
                                      4: {"generate"}}[world]
    assert set(found) == expected
    bad = {k: v for k, v in found.items() if max(v) > cases.TOLERANCE.get(k, cases.TOL)}
    assert not bad, f"{world} processes: relative error above {cases.TOL} ({cases.TOLERANCE}): {bad}"


def test_bytes_sent_match_the_volume_model(runs):
    """The communication table's formula (vace_core.distributed.volume) counts what the ranks really send."""
    world, per_rank = runs
    for rank, run in enumerate(per_rank):
        for case, (sent, predicted) in run["bytes"].items():
            assert sent == predicted, f"{world} processes, rank {rank}, {case}: sent {sent}, model {predicted}"
            assert sent > 0


def test_layout_errors_name_the_fix():
    with pytest.raises(VaceError, match="12 does not divide by 8.*ring or usp"):
        plan_degrees(8, 12, "ulysses")
    with pytest.raises(VaceError, match="do not split in two"):
        plan_degrees(3, 12, "ring", cfg_parallel=True)
    with pytest.raises(VaceError, match="unknown parallel mode"):
        plan_degrees(2, 12, "tensor")
    with pytest.raises(VaceError, match="must divide both"):
        plan_degrees(8, 12, "usp", ulysses=8)
    assert plan_degrees(8, 12, "usp") == plan_degrees(8, 12, "usp", ulysses=4)
    assert (plan_degrees(8, 12, "usp").ring, plan_degrees(8, 40, "usp", True).ulysses) == (2, 4)
    assert plan_degrees(8, 12, "ring", cfg_parallel=True).ring == 4


def test_init_outside_torchrun_says_how_to_launch(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(VaceError, match="torchrun --nproc-per-node"):
        init_parallel(2)


def _torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "-m", "vace_core", "run", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_torchrun_cli_runs_a_job_file_like_one_process(tmp_path):
    """Two VCU streams (inpaint + control, two references, guidance) from a job file, ring attention and
    FSDP2 weights over 2 processes: rank 0 alone writes, and the video equals the single-process run."""
    job = str(save_job(tmp_path / "job.safetensors", two_stream_job()))
    result = _torchrun(2, "--job", job, "--parallel", "ring", "--fsdp", "--out", str(tmp_path / "two.mp4"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("wrote ") == 1
    assert result.stdout.count("CFG 1 x ring 2 x Ulysses 1 on cpu, weights sharded (FSDP2)") == 2
    main(["run", "--job", job, "--out", str(tmp_path / "one.mp4")])
    two, one = read_video(tmp_path / "two.mp4")[0], read_video(tmp_path / "one.mp4")[0]
    assert two.shape == one.shape == (5, 32, 48, 3)
    torch.testing.assert_close(two, one, atol=1 / 255, rtol=0)  # same latent: at most one level of rounding


def test_torchrun_cli_refuses_an_impossible_layout():
    result = _torchrun(3, "--steps", "1", "--parallel", "ulysses", "--out", "unused.mp4")
    assert result.returncode != 0
    assert result.stderr.count("error: Ulysses splits the 2 attention heads over 3") == 3  # every rank says why
    assert "vace_core/" not in result.stderr  # a message, no traceback from our code (torchrun adds its summary)


def test_parallel_flags_outside_torchrun_say_how_to_launch(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(SystemExit, match="run under torchrun, one process per GPU"):
        main(["run", "--steps", "1", "--cfg-parallel", "--out", "unused.mp4"])


def test_block_attention_returns_the_log_sum_exp_and_merges_exactly():
    """The ring's per-block kernel gives the scores' log-sum-exp; merging two key blocks by it equals
    attention over all keys (also with a broadcast bias and a boolean mask)."""
    from vace_core.attention import attention
    from vace_core.distributed.attention import _merge, attention_with_lse

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, 8, generator=g) for _ in range(3))
    bias = torch.randn(1, 1, 5, 5, generator=g)
    out, lse = attention_with_lse(q, k, v, bias)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / 8**0.5 + bias
    torch.testing.assert_close(lse, torch.logsumexp(scores, -1))
    halves = [attention_with_lse(q, k[:, s], v[:, s], bias[..., s]) for s in (slice(0, 2), slice(2, 5))]
    merged = _merge(*halves)[0].flatten(2)
    torch.testing.assert_close(merged, attention(q, k, v, "sdpa", bias))
    keep = torch.rand(2, 1, 5, 5, generator=g) > 0.4
    keep[..., 0] = True
    torch.testing.assert_close(attention_with_lse(q, k, v, keep)[0].flatten(2), attention(q, k, v, "sdpa", keep))
