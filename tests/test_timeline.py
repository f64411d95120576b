"""Long-video timeline (vace_core.timeline) and re-rendering one window (long_video.Resume, the job file's saved
state): per-window prompts / references / end frames / seeds, loops, on the embedded tiny DiT (16x16 frames,
17 frames in 9-frame windows: windows 0-8, 4-12, 8-16, one step)."""

import pytest
import torch

from vace_core import long_video as L
from vace_core import vcu as V
from vace_core.embedded import tiny_model
from vace_core.errors import VaceError
from vace_core.job import Job, load_job, run_job, save_job
from vace_core.pipeline import SamplerSettings
from vace_core.sampling import ContextStream
from vace_core.timeline import Timeline, parse_prompts
from vace_core.vae import WanVAE

FAST = SamplerSettings(steps=1, guidance=1.0, seed=5)
LONG = L.LongVideoSettings(window=9, overlap=5, colour_strength=0.0)
UNIT = V.text_to_video(17, 16, 16)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return tiny_model(), WanVAE(dim=4, dim_mult=(1, 1, 1, 1), num_res_blocks=1).eval().requires_grad_(False)


def features(seed, length=6):
    return torch.randn(1, length, 64, generator=torch.Generator().manual_seed(seed))


def run(models, timeline=None, long=LONG, resume=None, unit=UNIT, settings=FAST):
    return L.generate_long(*models, unit, features(0), features(9), settings=settings, long=long, timeline=timeline,
                           resume=resume)


@pytest.fixture(scope="module")
def today(models):
    return run(models)


def spy_texts(monkeypatch):
    """The positive text and the VCUs each window is sampled with."""
    seen = []
    original = L.sample_window

    def spy(model, vae, units, free, kept, positive, *args, **kwargs):
        seen.append((positive.clone(), units))
        return original(model, vae, units, free, kept, positive, *args, **kwargs)

    monkeypatch.setattr(L, "sample_window", spy)
    return seen


def test_one_prompt_for_every_window_is_today_bit_for_bit(models, today):
    assert torch.equal(run(models, Timeline([features(0)])).video, today.video)
    assert [r.seed for r in today.records] == [5, 6, 7]  # seed + i


def test_each_window_reads_its_prompt(models, monkeypatch):
    seen = spy_texts(monkeypatch)
    prompts = [features(1), features(2, 4), features(3, 8)]
    result = run(models, Timeline(prompts))
    assert [torch.equal(text, p) for (text, _), p in zip(seen, prompts, strict=True)] == [True] * 3
    assert [r.prompt for r in result.records] == [0, 1, 2]


def test_a_blended_boundary_equals_its_formula(models, monkeypatch):
    seen = spy_texts(monkeypatch)
    first, second = features(1, 4), features(2, 6)
    run(models, Timeline([first, second], blend=True))
    beta = 5 / 9  # window 1 carries 5 of its 9 frames
    padded = torch.nn.functional.pad(first, (0, 0, 0, 2))
    torch.testing.assert_close(seen[1][0], beta * padded + (1 - beta) * second, atol=0, rtol=0)
    assert torch.equal(seen[2][0], second)  # window 2 has the same prompt as window 1: no blend


def test_frame_mapped_prompts_go_to_the_windows_that_generate_those_frames(models, monkeypatch):
    assert parse_prompts("a cat\n\nthe cat jumps") == (["a cat", "the cat jumps"], None)
    assert parse_prompts("0: a cat\n10: it jumps") == (["a cat", "it jumps"], [0, 10])
    for bad, message in (("0: a\nb", "has no frame"), ("3: a", "start at 0"), ("", "no prompts")):
        with pytest.raises(VaceError, match=message):
            parse_prompts(bad)
    result = run(models, Timeline([features(1), features(2)], starts=[0, 10]))
    assert [r.prompt for r in result.records] == [0, 0, 1]  # windows start generating at frames 0, 9, 13


def test_window_references_seeds_and_end_frames(models, monkeypatch, today):
    seen = spy_texts(monkeypatch)
    end = torch.rand(16, 16, 3)
    reference = torch.rand(16, 16, 3)
    result = run(models, Timeline(references={1: [reference]}, end_frames={2: end}, seeds={0: 123}))
    assert [len(units[0].references) for _, units in seen] == [0, 1, 1]  # from window 1 on
    last = seen[2][1][0]
    assert last.masks[-1].sum() == 0 and torch.equal(last.frames[:, -1], end.permute(2, 0, 1) * 2 - 1)
    assert torch.equal(result.video[:, -1], end.permute(2, 0, 1) * 2 - 1)  # the pinned frame, exactly
    assert [r.seed for r in result.records] == [123, 6, 7]
    assert not torch.equal(result.video[:, :9], today.video[:, :9])


def test_loop_ends_on_the_first_frames_exactly(models, monkeypatch):
    seen = spy_texts(monkeypatch)
    loop = L.LongVideoSettings(window=13, overlap=5, colour_strength=0.0)  # windows 0-12, 8-20
    video = run(models, Timeline(loop=True), long=loop, unit=V.text_to_video(21, 16, 16)).video
    assert torch.equal(video[:, -5:], video[:, :5])
    last = seen[-1][1][0]
    assert last.masks[-5:].sum() == 0 and last.masks[:5].sum() == 0 and last.masks[5:-5].sum() > 0
    with pytest.raises(VaceError, match="nothing is left to generate"):
        run(models, Timeline(loop=True))  # 9-frame windows: 5 carried + 5 looped leave no room
    with pytest.raises(VaceError, match="use autoregressive mode"):
        run(models, Timeline(loop=True), long=L.LongVideoSettings(window=9, mode="hierarchical", keyframes=5))
    with pytest.raises(VaceError, match="denoised together with one prompt"):
        run(models, Timeline([features(1)]), long=L.LongVideoSettings(window=9, mode="fused"))


@pytest.mark.parametrize("later", ["keep", "regenerate"])
def test_rerender_with_the_same_seed_is_the_original_bit_for_bit(models, today, later):
    resume = L.Resume(today.video, today.anchor, today.records, 1, later)
    again = run(models, resume=resume)
    assert torch.equal(again.video, today.video)
    assert again.records == today.records


def test_rerender_with_a_new_seed_keeps_the_earlier_windows(models, today):
    resume = L.Resume(today.video, today.anchor, today.records, 1, "keep")
    new = run(models, Timeline(seeds={1: 99}), resume=resume)
    assert new.video.shape == today.video.shape
    assert torch.equal(new.video[:, :9], today.video[:, :9])  # window 0 wrote frames 0-8
    assert not torch.equal(new.video[:, 9:13], today.video[:, 9:13])  # window 1 wrote 9-12
    assert torch.equal(new.video[:, 13:], today.video[:, 13:])  # window 2's own frames, kept
    assert [r.seed for r in new.records] == [5, 99, 7]
    regenerated = run(models, Timeline(seeds={1: 99}), resume=L.Resume(today.video, today.anchor, today.records, 1,
                                                                      "regenerate"))
    assert torch.equal(regenerated.video[:, :9], today.video[:, :9])
    assert not torch.equal(regenerated.video[:, 13:], today.video[:, 13:])


def test_the_seam_is_reblended_by_its_formula():
    frames, saved = torch.zeros(3, 9, 2, 2), torch.ones(3, 17, 2, 2)
    L.reblend_seam(frames, tuple(range(4, 13)), saved, [8, 9, 10, 11, 12])
    assert frames[0, :, 0, 0].tolist() == pytest.approx([0, 0, 0, 0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])


def test_saved_state_round_trips_and_rerenders_through_the_job_file(models, tmp_path):
    timeline = Timeline([features(1), features(2)], [0, 10], True, {1: [torch.rand(16, 16, 3)]},
                        {2: torch.rand(16, 16, 3)}, {0: 42})
    job = Job([UNIT], features(0), features(9), [ContextStream()], FAST, LONG, timeline)
    original = run_job(job, *models, None, state=tmp_path / "state.safetensors")
    saved = load_job(tmp_path / "state.safetensors")
    assert torch.equal(saved.video, original) and [r.seed for r in saved.records] == [42, 6, 7]
    assert saved.long == LONG and saved.timeline.starts == [0, 10] and saved.timeline.blend
    assert torch.equal(run_job(saved, *models, None, rerender=2), original)
    with pytest.raises(VaceError, match="re-render window 3"):
        run_job(saved, *models, None, rerender=3)
    plain = save_job(tmp_path / "plain.safetensors", Job([UNIT], features(0), None, [ContextStream()], FAST))
    with pytest.raises(VaceError, match="for long-video jobs"):
        run_job(load_job(plain), *models, None, rerender=1)


def test_command_line_saves_the_state_and_rerenders_a_window(tmp_path):
    """Two prompts, a window seed, --save-state; then --job STATE --rerender 1: the same seed reproduces the run
    bit for bit, a new seed keeps windows 0 (and the frames of window 2, seam aside) and the length."""
    from vace_core.__main__ import main

    common = ["--width", "16", "--height", "16", "--steps", "1", "--cfg", "1"]
    state, again, other = (tmp_path / f"{n}.safetensors" for n in ("state", "again", "other"))
    main(["run", "--prompt", "a fox", "--prompt", "a fox jumps", "--length", "17", "--window", "9",
          "--window-seed", "2:77", *common, "--save-state", str(state), "--out", str(tmp_path / "a.mp4")])
    saved = load_job(state)
    assert len(saved.timeline.prompts) == 2 and [r.seed for r in saved.records] == [0, 1, 77]
    main(["run", "--job", str(state), "--rerender", "1", "--save-state", str(again), "--out", str(tmp_path / "b.mp4")])
    assert torch.equal(load_job(again).video, saved.video)
    main(["run", "--job", str(state), "--rerender", "1", "--rerender-seed", "5", "--rerender-prompt", "a wolf",
          "--save-state", str(other), "--out", str(tmp_path / "c.mp4")])
    changed = load_job(other)
    assert changed.video.shape == saved.video.shape and torch.equal(changed.video[:, :9], saved.video[:, :9])
    assert not torch.equal(changed.video[:, 9:13], saved.video[:, 9:13])
    assert torch.equal(changed.video[:, 13:], saved.video[:, 13:]) and changed.records[1].seed == 5
