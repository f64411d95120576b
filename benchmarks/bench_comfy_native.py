"""Seconds per sampling step in a real ComfyUI server: our VACE Sampler vs native WanVaceToVideo + KSampler,
same tiny DiT file, same inputs (the graphs of tests/integration/native_graphs.py), Euler, cfg 5.

    .venv/bin/python benchmarks/bench_comfy_native.py [--short 2 --long 22 --repeats 3]

Per step = (fastest run with --long steps - fastest run with --short steps) / (long - short), from ComfyUI's own
timestamps, after a warm-up run that loads the models. Native caches its loaders and VAE encode between runs;
ours encodes the VCU inside the sampler in every run, which cancels out in the difference (hence the fastest of
several runs, and many steps: the encode's jitter is larger than a tiny model's step). Needs the ComfyUI runtime
the integration tests use.
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    from tests.integration.comfy_server import ComfyServer, find_runtime, runtime_hint
    from tests.integration.fixtures import FULL_VAE, write_inputs, write_models
    from tests.integration.native_graphs import CFG, FRAMES, H, W, native, ours, run_latent

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--short", type=int, default=2)
    p.add_argument("--long", type=int, default=22)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    runtime = find_runtime()
    if runtime is None:
        sys.exit(runtime_hint())
    per_step = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_models(Path(tmp), vae_shape=FULL_VAE)
        write_inputs(Path(tmp), H, W, FRAMES)
        with ComfyServer(runtime, Path(tmp)) as comfy:
            for name, graph in (("native", native), ("ours", ours)):
                run_latent(comfy, graph(args.short, seed=1))  # warm-up: loads the models
                short, long = (min(run_latent(comfy, graph(steps, seed=2 + i))[1] for i in range(args.repeats))
                               for steps in (args.short, args.long))
                per_step[name] = (long - short) / (args.long - args.short)
    print(f"seconds per step (CPU, tiny DiT, {W}x{H}x{FRAMES} + 1 reference, cfg {CFG}): "
          f"ours {per_step['ours']:.3f}, native {per_step['native']:.3f}; "
          f"ratio ours/native {per_step['ours'] / per_step['native']:.2f}")


if __name__ == "__main__":
    main()
