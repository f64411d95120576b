"""End-to-end VACE sampling (encode VCU, sample with CFG, decode): ours vs diffusers' WanVACEPipeline,
same weights, scheduler grid, noise and inputs, side by side.

    .venv/bin/python benchmarks/bench_pipeline.py [--dim 256 --layers 4 --vae-dim 16 --size 128 192 \
        --frames 17 --steps 10]

Each implementation runs in its own subprocess; median of 3 runs after a warm-up, and the peak extra
resident memory of a run (see harness.py).
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_one(impl: str, args) -> dict:
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline
    from einops import rearrange

    from benchmarks.harness import measure
    from tests.reference import diffusers_vace, randomise
    from vace_core.checkpoints import load_vace_model
    from vace_core.pipeline import SamplerSettings, generate
    from vace_core.vae import load_vae
    from vace_core.vcu import inpaint

    torch.set_num_threads(args.threads)
    h, w = args.size
    ref_dit, _, _ = diffusers_vace(args.dim // 128, 128, args.layers, tuple(range(0, args.layers, 2)),
                                   ffn=4 * args.dim, text_dim=4096)
    ref_vae = randomise(AutoencoderKLWan(base_dim=args.vae_dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                                         temperal_downsample=[False, True, True]), seed=5, std=0.05)
    g = torch.Generator().manual_seed(0)
    video = torch.rand(args.frames, h, w, 3, generator=g)
    mask = torch.zeros(h, w)
    mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
    positive, negative = torch.randn(1, 512, 4096, generator=g), torch.randn(1, 512, 4096, generator=g)
    vcu = inpaint(video, mask)
    settings = SamplerSettings(steps=args.steps, guidance=5.0, shift=16.0, schedule="diffusers", seed=1)
    if impl == "ours":
        with tempfile.TemporaryDirectory() as tmp:
            ref_dit.save_pretrained(f"{tmp}/dit")
            ref_vae.save_pretrained(f"{tmp}/vae")
            del ref_dit, ref_vae
            dit, vae = load_vace_model(f"{tmp}/dit", device="cpu"), load_vae(f"{tmp}/vae")

        def fn():
            return generate(dit, vae, vcu, positive, negative, settings=settings)
    else:
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=16.0)
        pipe = WanVACEPipeline(tokenizer=None, text_encoder=None, vae=ref_vae, scheduler=scheduler,
                               transformer=ref_dit)
        pipe.set_progress_bar_config(disable=True)
        frames = rearrange(vcu.frames + 1, "c t h w -> 1 t c h w") / 2
        masks = rearrange(vcu.masks, "t h w -> 1 t 1 h w").expand(-1, -1, 3, -1, -1)

        def fn():
            with torch.no_grad():
                return pipe(video=frames, mask=masks, prompt_embeds=positive, negative_prompt_embeds=negative,
                            height=h, width=w, num_frames=args.frames, num_inference_steps=args.steps,
                            guidance_scale=5.0, generator=torch.Generator().manual_seed(1), output_type="pt")
    return measure(fn)


def main():
    from benchmarks.harness import print_table, side_by_side

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vae-dim", type=int, default=16)
    p.add_argument("--size", type=int, nargs=2, default=(128, 192), metavar=("H", "W"))
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--impl", choices=("ours", "diffusers"), help=argparse.SUPPRESS)
    args = p.parse_args()
    rows = side_by_side(__file__, args, run_one)
    print_table(f"VACE inpainting end to end: DiT dim {args.dim}, {args.layers} layers; VAE base {args.vae_dim}; "
                f"{args.frames} frames {args.size[0]}x{args.size[1]}; {args.steps} steps, CFG 5; "
                f"{args.threads} threads", rows)


if __name__ == "__main__":
    main()
