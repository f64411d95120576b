"""Long video: peak memory and time against the number of windows, and colour anchoring on real footage.

Windows: the embedded tiny DiT + tiny VAE (random weights, CPU unless CUDA is there), a text-to-video VCU of
1, 2, 3, 4 windows; each case in its own process (harness.measure: one warm-up run, then the measured one).
The peak should grow only by the output buffer (3 x T x H x W float32) and time linearly with the windows.

Colour: real videos (../shared/media) cut into windows; windows 1-3 get a known progressive tint + exposure
drift; mean CIE76 dE against the undrifted frames before and after matching to window 0 (the fixed anchor),
and how much a window without drift is changed.

    .venv/bin/python benchmarks/bench_long_video.py windows --window 17 --size 64 --steps 2
    .venv/bin/python benchmarks/bench_long_video.py colour ../shared/media/boxing_cats_720p_81f.mp4

Drift inside sampling (the colour test moved into the sampler): the tiny DiT wrapped so that window i's velocity
carries a per-channel latent offset growing with i (a model that drifts, window after window); per window, the
mean CIE76 dE of the output against the same run without the drift, with no correction, post-hoc colour
matching only (reinhard, to window 0), anchor guidance only (weight w, first window's statistics), and both.

    .venv/bin/python benchmarks/bench_long_video.py guidance --windows 4 --size 64 --steps 6 --weight 1 --end 0.5
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import measure  # noqa: E402
from vace_core.colour import ColourAnchor, delta_e, match_colours  # noqa: E402
from vace_core.denoiser import Wrapper  # noqa: E402
from vace_core.embedded import tiny_model, tiny_vae  # noqa: E402
from vace_core.long_video import LongVideoSettings, autoregressive_plan, generate_long  # noqa: E402
from vace_core.pipeline import SamplerSettings  # noqa: E402
from vace_core.vcu import text_to_video  # noqa: E402
from vace_core.video_io import read_video  # noqa: E402


def length_for(windows: int, window: int, overlap: int) -> int:
    return window + (windows - 1) * (window - overlap)


def run_windows(args) -> dict:
    """In a child process: one long-video run of `args.windows` windows."""
    model, vae = tiny_model(), tiny_vae()
    length = length_for(args.windows, args.window, args.overlap)
    unit = text_to_video(length, args.size, args.size)
    text = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(0))
    settings = SamplerSettings(steps=args.steps, guidance=1.0)
    long = LongVideoSettings(window=args.window, overlap=args.overlap)
    result = measure(lambda: generate_long(model, vae, unit, text, settings=settings, long=long), repeats=1)
    return {**result, "frames": length, "windows": len(autoregressive_plan(length, args.window, args.overlap)),
            "output_mib": 3 * length * args.size**2 * 4 / 2**20}


def windows_table(args):
    rows = []
    for n in range(1, args.max_windows + 1):
        out = subprocess.run([sys.executable, __file__, "windows", "--child", str(n), "--window", str(args.window),
                              "--overlap", str(args.overlap), "--size", str(args.size), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"window {args.window}, overlap {args.overlap}, {args.size}x{args.size}, {args.steps} steps, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"{'windows':>8}{'frames':>8}{'seconds':>10}{'s/window':>10}{'peak MiB':>10}{'output MiB':>11}")
    for r in rows:
        print(f"{r['windows']:8d}{r['frames']:8d}{r['seconds']:10.2f}{r['seconds'] / r['windows']:10.2f}"
              f"{r['peak_mib']:10.1f}{r['output_mib']:11.1f}")
    one, three = rows[0], rows[min(2, len(rows) - 1)]
    print(f"peak {three['windows']} windows - 1 window: {three['peak_mib'] - one['peak_mib']:.1f} MiB "
          f"(output buffer difference {three['output_mib'] - one['output_mib']:.1f} MiB)")


def drift(frames: torch.Tensor, window: int) -> torch.Tensor:
    """A warm tint and brighter exposure growing frame by frame (the same as tests/test_colour.py)."""
    t = torch.linspace(window - 1, window, len(frames))[:, None, None, None]
    gain = torch.tensor([1.04, 1.0, 0.92]) ** t * (1 + 0.05 * t)
    return (frames * gain).clamp(0, 1)


def colour_table(args):
    for path in args.videos:
        frames, _ = read_video(path)
        frames = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), scale_factor=args.scale,
                                                 mode="area").permute(0, 2, 3, 1)
        size = len(frames) // 4
        anchor = ColourAnchor.from_images(frames[:size])
        print(f"{Path(path).name}: {len(frames)} frames at {frames.shape[2]}x{frames.shape[1]}, windows of {size}")
        print(f"{'window':>7}{'drift dE':>10}{'reinhard':>10}{'mkl':>8}{'clean: reinhard':>17}{'mkl':>8}")
        for w in (1, 2, 3):
            truth = frames[w * size:(w + 1) * size]
            drifted = drift(truth, w)
            after = [delta_e(match_colours(drifted, anchor, m), truth) for m in ("reinhard", "mkl")]
            clean = [delta_e(match_colours(truth, anchor, m), truth) for m in ("reinhard", "mkl")]
            before = delta_e(drifted, truth)
            print(f"{w:7d}{before:10.2f}{after[0]:10.2f}{after[1]:8.2f}{clean[0]:17.2f}{clean[1]:8.2f}")


class Drifting(Wrapper):
    """The DiT with a drift that grows window by window: v - i * offset in window i (`steps` calls per window at
    guidance 1), which moves window i's latent by about +i * offset per channel."""

    staged = False

    def __init__(self, inner, offset: torch.Tensor, steps: int):
        super().__init__(inner)
        self.offset, self.steps, self.calls = offset, steps, 0

    def __call__(self, x, t, text, contexts, strengths, **biases):
        window = self.calls // self.steps
        self.calls += 1
        return self.inner(x, t, text, contexts, strengths, **biases) - window * self.offset.to(x)


def guidance_table(args):
    model, vae = tiny_model(), tiny_vae()
    length = length_for(args.windows, args.window, args.overlap)
    unit = text_to_video(length, args.size, args.size)
    text = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(0))
    settings = SamplerSettings(steps=args.steps, guidance=1.0, shift=5.0, seed=3)
    offset = torch.tensor([0.4, -0.3, 0.2, 0.0] * 4).reshape(1, 16, 1, 1, 1) * args.drift
    plan = autoregressive_plan(length, args.window, args.overlap)

    def run(net, colour: float, weight: float):
        long = LongVideoSettings(window=args.window, overlap=args.overlap, colour_strength=colour,
                                 anchor_guidance=weight, anchor_end=args.end)
        return generate_long(net, vae, unit, text, settings=settings, long=long).video

    truth = run(model, 0.0, 0.0)
    cases = {"drift": (0.0, 0.0), "post-hoc": (1.0, 0.0), "guidance": (0.0, args.weight), "both": (1.0, args.weight)}
    rows = {name: run(Drifting(model, offset, args.steps), c, w) for name, (c, w) in cases.items()}
    print(f"{args.windows} windows of {args.window} frames (overlap {args.overlap}), {args.size}x{args.size}, "
          f"{args.steps} steps, drift {args.drift}/window, anchor guidance w {args.weight} for the first {args.end} "
          "of the steps; mean dE against the undrifted run, per window's written frames")
    print(f"{'window':>7}" + "".join(f"{name:>10}" for name in cases))
    for i, window in enumerate(plan):
        frames = [window.positions[k] for k in window.output]
        cells = [delta_e(to_image(v[:, frames]), to_image(truth[:, frames])) for v in rows.values()]
        print(f"{i:7d}" + "".join(f"{c:10.2f}" for c in cells))


def to_image(video: torch.Tensor) -> torch.Tensor:
    return ((video + 1) / 2).clamp(0, 1).permute(1, 2, 3, 0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("windows", help="peak memory and time against the number of windows")
    w.add_argument("--window", type=int, default=17)
    w.add_argument("--overlap", type=int, default=5)
    w.add_argument("--size", type=int, default=64)
    w.add_argument("--steps", type=int, default=2)
    w.add_argument("--max-windows", type=int, default=4)
    w.add_argument("--child", type=int, help=argparse.SUPPRESS)
    c = sub.add_parser("colour", help="colour anchoring on real videos with a known drift")
    c.add_argument("videos", nargs="+")
    c.add_argument("--scale", type=float, default=0.25, help="resize factor (speed)")
    g = sub.add_parser("guidance", help="drift inside sampling: post-hoc matching, anchor guidance, both")
    g.add_argument("--windows", type=int, default=4)
    g.add_argument("--window", type=int, default=17)
    g.add_argument("--overlap", type=int, default=5)
    g.add_argument("--size", type=int, default=64)
    g.add_argument("--steps", type=int, default=6)
    g.add_argument("--drift", type=float, default=1.0, help="latent offset scale added per window")
    g.add_argument("--weight", type=float, default=1.0, help="anchor guidance weight")
    g.add_argument("--end", type=float, default=0.5, help="anchor guidance: fraction of the steps")
    args = p.parse_args()
    if args.what == "colour":
        colour_table(args)
    elif args.what == "guidance":
        guidance_table(args)
    elif args.child:
        args.windows = args.child
        print(json.dumps(run_windows(args)))
    else:
        windows_table(args)


if __name__ == "__main__":
    main()
