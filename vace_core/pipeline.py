"""Every VACE task end to end: VCUs -> context latents -> flow-matching sampling -> decoded video.

The steps are separate functions so the ComfyUI nodes can run them one per node (encode in Build VCU,
sample in VACE Sampler, decode in Decode) and the command line can run them in one call (`generate`).
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .denoiser import Layer, Step, Wrapper
from .errors import VaceError
from .experts import as_experts
from .lora.region import TokenSpace, region_scope
from .reference_leak import ReferenceAttention, frame_weights
from .sampling import (
    ContextStream,
    cfg,
    context_strengths,
    flow_sigmas,
    make_noise,
    sample,
    seeded_generator,
    sigma_to_timestep,
)
from .sampling.loop import MAX_SEED
from .settings import Knob, check, knob
from .step_cache import TeaCache
from .text import TEXT_LEN
from .vcu import VCU, encode_vcu

log = logging.getLogger("vace")


@dataclass(frozen=True, kw_only=True)
class SamplerSettings:
    """Official VACE defaults: 50 steps, guidance 5, shift 16, UniPC on the official Wan sigma grid. The knobs'
    ranges are the VACE Sampler's and the command line's (`check`); `schedule` picks a reference's sigma grid
    (parity tests), not a user setting."""

    steps: int = knob(50, "Sampling steps (official: 50).", min=1, max=200)
    guidance: float = knob(5.0, "Classifier-free guidance (official: 5). 1 skips the negative pass.",
                           min=1.0, max=30.0, step=0.1)
    shift: float = knob(16.0, "Sigma shift (official VACE: 16). Higher spends more steps on layout.",
                        min=0.1, max=100.0, step=0.1)
    solver: str = knob("unipc", "Flow-matching solver. unipc is the official one; with a speed LoRA (CausVid, "
                       "lightx2v) euler or lcm at cfg 1 (README: Presets).",
                       choices=("unipc", "euler", "dpmpp_2m", "lcm"))
    schedule: str = "wan"
    seed: int = knob(0, "Noise seed: the same seed gives the same noise on every device.", min=0, max=MAX_SEED)
    step_cache: TeaCache | None = None  # None: every step runs the blocks
    # reference leak control (vace_core.reference_leak): 1 = as trained
    reference_weight: float = knob(1.0, "Reference leak control, for VCUs with reference images: how much the first "
                                   "output frame attends the references (1 = as trained). Lower it (e.g. 0.3) when "
                                   "the reference looks pasted into the first frames. README: Reference leak control.",
                                   min=0.0, max=1.0, step=0.05)
    reference_decay: float = knob(1.0, "How the reference weight recovers over the video, per latent frame (4 "
                                  "frames): weight at frame f = 1 - (1 - reference_weight) x decay^f. 1 = the same "
                                  "weight on every frame; 0.5 = back to full attention after a few latent frames.",
                                  min=0.0, max=1.0, step=0.05)

    def check(self) -> None:
        check(self)


def encode_contexts(vcus: Sequence[VCU], vae_encode: Callable[[Tensor], Tensor]) -> list[Tensor]:
    """One (1, 96, T_lat + refs, H/8, W/8) context latent per VCU; all must describe the same latent."""
    shapes = {v.latent_shape for v in vcus}
    if len(shapes) > 1:
        raise VaceError(f"the VCUs describe different latents {sorted(shapes)} (frames+references, H/8, W/8): "
                        "build every VCU at one size and length, with the same number of references")
    return [encode_vcu(v, vae_encode)[None] for v in vcus]


def _text_batch(positive: Tensor, negative: Tensor | None, dtype) -> Tensor:
    """(L, D) or (1, L, D) features -> (1 or 2, max L, D), zero-padded (the DiT pads to 512 anyway)."""
    texts = [t if t.ndim == 3 else t[None] for t in (positive, negative) if t is not None]
    length = max(t.shape[1] for t in texts)
    if length > TEXT_LEN:
        log.warning("VACE: a prompt has %d tokens; the official model saw at most %d. All are attended (as "
                    "ComfyUI's native Wan model does); shorten the prompt to stay within what it was trained on.",
                    length, TEXT_LEN)
    return torch.cat([F.pad(t, (0, 0, 0, length - t.shape[1])) for t in texts]).to(dtype)


def sample_latent(model, contexts: Sequence[Tensor], positive: Tensor, negative: Tensor | None = None,
                  streams: Sequence[ContextStream] | None = None, settings: SamplerSettings = SamplerSettings(),
                  callback=None, device=None, regions=None, layers: Sequence[Layer] = (),
                  space: TokenSpace | None = None, x0_hook=None) -> Tensor:
    """Samples the (1, 16, T_lat + refs, H/8, W/8) latent (reference frames still in front).

    model: a `denoiser.Denoiser`, or `experts.Experts` (Wan2.2: the high-noise expert and settings.guidance while
    t >= boundary, then the low-noise one and its guidance). streams: (strength, start, end) per context, default
    full strength over every step. Guidance runs the negative prompt in the same batch (with the same contexts,
    as the reference does); guidance 1 skips it. callback(step, total, x, x0_preview) may stop the run (see
    sampling.sample). device: where the inputs go (default: the model's).

    Features reach the denoiser as layers (vace_core.denoiser): every step, the expert of the timestep gets
    settings.step_cache (TeaCache: skips the blocks of steps it deems redundant), then `layers` in order (long
    video's window blending, carry guidance, latent replacement), then `regions` (a `regional.RegionalLayout`
    from `Regions.for_vcu`: regional prompts, `positive` being their text). The reference-leak weighting
    (settings.reference_weight, vace_core.reference_leak) sits just inside the regions.

    space: where the latent's tokens lie in the video (`TokenSpace.for_vcu`), for LoRAs confined to regions
    (vace_core.lora.region; needed only when the model carries some) and for the reference-leak weighting.
    x0_hook(x0, step, steps) -> x0: guidance on the predicted clean latent x0 = x - sigma v (long video's anchor
    guidance); the velocity becomes (x - x0') / sigma.
    """
    streams = [ContextStream(*s) for s in streams] if streams is not None else [ContextStream()] * len(contexts)
    if len(streams) != len(contexts):
        raise VaceError(f"{len(contexts)} VCUs but {len(streams)} strengths: give one per VCU")
    if not contexts:
        raise VaceError("VACE needs at least one VCU (use text_to_video() for plain text-to-video)")
    sigmas = flow_sigmas(settings.steps, settings.shift, settings.schedule)
    experts = as_experts(model)
    dtype, device = experts.compute_dtype, device or experts.device
    guided = negative is not None and any(g != 1 for g in experts.guidances(settings.guidance))
    text = _text_batch(positive, negative if guided else None, dtype).to(device)
    contexts = [c.to(device, dtype) for c in contexts]
    if regions is not None:
        regions.regions.check_text(positive)
    cache, leak = settings.step_cache, _reference_attention(settings, space, contexts[0], regions)
    stack = [*([cache.layer] if cache is not None else []), *layers,
             *([lambda net, step: ReferenceWeighted(net, leak)] if leak is not None else []),
             *([regions.layer] if regions is not None else [])]
    if cache is not None:
        cache.begin(settings.steps)

    def denoise(x, sigma, i):
        v = velocity(x, sigma, i)
        if x0_hook is None or sigma == 0:
            return v
        return (x - x0_hook(x - sigma * v, i, settings.steps)) / sigma

    def velocity(x, sigma, i):
        timestep = sigma_to_timestep(sigma, settings.schedule)
        net, guidance = experts.at(timestep, settings.guidance)
        scope.attach(net)
        strengths = context_strengths(streams, i, settings.steps)
        step = Step(i, settings.steps, sigma, timestep, tuple(strengths))
        for layer in stack:
            net = layer(net, step)
        rows = 2 if guided and guidance != 1 else 1  # a cfg-1 expert skips the negative pass
        active = [(c, s) for c, s in zip(contexts, strengths, strict=True) if s]
        with torch.no_grad():
            v = net(x.to(dtype).expand(rows, -1, -1, -1, -1), torch.full((rows,), timestep, device=device),
                    text[:rows], [c for c, _ in active], [s for _, s in active]).float()
        return cfg(v[:1], v[1:], guidance) if rows == 2 else v

    generator = seeded_generator(settings.seed)  # the starting noise, then LCM's fresh noise, from one seed
    noise = make_noise((1, 16, *contexts[0].shape[2:]), generator, device)
    experts.weights_checked()  # the loader's NaN/inf check ran while the inputs were encoded
    with region_scope(space) as scope:
        latent = sample(denoise, noise, sigmas, settings.solver, callback, generator)
    if cache is not None:
        log.info("%s", cache.stats)
    return latent


class ReferenceWeighted(Wrapper):
    """One step's denoiser with the reference-leak weighting as its self-attention bias."""

    staged = False

    def __init__(self, inner, weighting: ReferenceAttention):
        super().__init__(inner)
        self.weighting = weighting

    def __call__(self, x, t, text, contexts, strengths, *, self_bias=None, cross_bias=None):
        if self_bias is not None:
            raise VaceError("reference_weight and another self-attention modulation cannot be combined: set "
                            "reference_weight to 1, or drop the other one")
        return self.inner(x, t, text, contexts, strengths, self_bias=self.weighting, cross_bias=cross_bias)


def _reference_attention(settings: SamplerSettings, space: TokenSpace | None, context: Tensor, regions):
    """The reference-leak weighting of self-attention (vace_core.reference_leak), or None (today's attention)."""
    frame_weights(settings.reference_weight, settings.reference_decay, 1)  # checks the numbers
    if settings.reference_weight == 1:
        return None
    if space is None:
        raise VaceError("reference_weight needs to know which latent frames are references: sample through "
                        "pipeline.generate or pass space=TokenSpace.for_vcu(vcu)")
    if regions is not None:
        raise VaceError("reference_weight and Regional Prompts both modulate self-attention and cannot be combined: "
                        "set reference_weight to 1, or drop the regions")
    h, w = context.shape[3] // 2, context.shape[4] // 2  # tokens per latent frame (patch 2x2)
    return ReferenceAttention.build(settings.reference_weight, settings.reference_decay, space.references, h * w)


def decode(latent: Tensor, vae_decode: Callable[[Tensor], Tensor], references: int) -> Tensor:
    """Drops the reference frames' latents, then decodes: -> (3, T, H, W) in [-1, 1]."""
    return vae_decode(latent[:, :, references:])[0].clamp(-1, 1)


FEATHER = Knob("feather", 8, "Soft edge in pixels where pasted pixels blend into generated ones.", min=0, max=256)


def composite(video: Tensor, vcu: VCU, feather: int = 0) -> Tensor:
    """Pastes the VCU's kept pixels (mask 0) back over the output, so kept regions stay exact; `feather`
    pixels of soft edge reach into the kept side, so seams blend. video (3, T, H, W) in [-1, 1]."""
    if video.shape[1:] != vcu.frames.shape[1:]:
        raise VaceError(f"cannot paste the VCU's kept pixels back: the video is {video.shape[1]} frames at "
                        f"{video.shape[2]}x{video.shape[3]}, the VCU {vcu.length} frames at "
                        f"{vcu.size[0]}x{vcu.size[1]}. Connect the VCU this latent was sampled from.")
    weight = vcu.masks.to(video)  # 1 = take the generated pixel
    if feather > 0:
        soft = F.avg_pool2d(weight[:, None], 2 * feather + 1, stride=1, padding=feather, count_include_pad=False)
        weight = torch.maximum(weight, soft[:, 0])
    return vcu.frames.to(video) * (1 - weight) + video * weight


def generate(model, vae, vcus: VCU | Sequence[VCU], positive: Tensor, negative: Tensor | None = None,
             streams: Sequence[ContextStream] | None = None, settings: SamplerSettings = SamplerSettings(),
             callback=None, tiling=None, composite_feather: int | None = None, regions=None) -> Tensor:
    """A whole VACE task: -> video (3, T, H, W) in [-1, 1]. composite_feather: paste the first VCU's kept
    pixels back (None: no compositing). regions: `regional.Regions` (positive = their composed text)."""
    vcus = [vcus] if isinstance(vcus, VCU) else list(vcus)
    layout = regions.for_vcu(vcus[0]) if regions is not None else None
    space = TokenSpace.for_vcu(vcus[0], region_masks=None if regions is None else regions.masks)
    with torch.no_grad():
        contexts = encode_contexts(vcus, lambda v: vae.encode(v, tiling=tiling))
        latent = sample_latent(model, contexts, positive, negative, streams, settings, callback, regions=layout,
                               space=space)
        video = decode(latent, lambda z: vae.decode(z, tiling=tiling), len(vcus[0].references))
    return video if composite_feather is None else composite(video, vcus[0], composite_feather)
