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

from .denoiser import Layer, Step, Wrapper, compose_bias
from .errors import VaceError
from .experts import as_experts
from .layer_skip import SkipLayers
from .lora.region import TokenSpace, region_scope
from .nag import NAG, text_with_negative
from .reference_leak import ReferenceAttention
from .reference_leak import frame_weights as leak_weights
from .sampling import (
    ContextStream,
    as_stream,
    context_strengths,
    denoise_sigmas,
    frame_weights,
    make_noise,
    sample,
    seeded_generator,
    sigma_to_timestep,
)
from .sampling.guiders import AdaptiveProjectedGuidance, CFGZeroStar, SkipLayerGuidance, combine, slg_third_pass
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
    nag: NAG | None = None  # Normalized Attention Guidance with the negative prompt (works at guidance 1)
    slg: SkipLayerGuidance | None = None  # skip-layer guidance (sampling/guiders.py)
    cfg_zero_star: CFGZeroStar | None = None  # CFG-Zero*: optimised scale and zero-init steps
    apg: AdaptiveProjectedGuidance | None = None  # adaptive projected guidance (keeps a running average per run)
    # video-to-video: the fraction of the schedule run from the noised init latent
    denoise: float = knob(1.0, "Video-to-video: the fraction of the schedule to run from the init video noised to "
                          "it (as KSampler's denoise). 1: from pure noise (the init is ignored); 0.6: keeps much of "
                          "it.", min=0.01, max=1.0, step=0.01)
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


def _nag_text(nag: NAG | None, negative: Tensor | None, dtype, device) -> Tensor | None:
    """The negative prompt's features (1, L, D) for NAG, or None when NAG is off."""
    if nag is None or nag.off:
        return None
    if negative is None:
        raise VaceError("NAG steers away from the negative prompt: connect one (Wan's default negative prompt works)")
    return _text_batch(negative, None, dtype).to(device)


def _check_guidance(settings: SamplerSettings, guided: bool, experts) -> None:
    """The CFG variants need the unconditional pass; SLG's blocks must exist."""
    if settings.cfg_zero_star is not None and settings.apg is not None:
        raise VaceError("CFG-Zero* and APG both replace the CFG combination: choose one")
    needs_uncond = [name for name, on in (("CFG-Zero*", settings.cfg_zero_star), ("APG", settings.apg),
                                          ("SLG mode 'uncond'", settings.slg and settings.slg.mode == "uncond")) if on]
    if needs_uncond and not guided:
        raise VaceError(f"{needs_uncond[0]} changes the unconditional (negative-prompt) pass, which guidance 1 does "
                        "not run: raise cfg above 1 with a negative prompt, or use SLG mode 'third' / NAG at cfg 1")
    if settings.slg is not None:
        settings.slg.check_model(experts.config.num_layers)


def _guide(call, settings: SamplerSettings, x: Tensor, sigma: float, step: int, rows: int, guidance: float) -> Tensor:
    """The step's velocity: CFG (or CFG-Zero* / APG) over the two rows, SLG's blocks skipped in the unconditional
    row or in a third pass; plain CFG, bit for bit, when every variant is off. x: what the model saw (float)."""
    slg = settings.slg if settings.slg is not None and settings.slg.active(step, settings.steps) else None
    v = call(rows, (False, True) if rows == 2 and slg is not None and slg.mode == "uncond" else ())
    v_cond = v[:1]
    if rows == 2:
        v = combine(v_cond, v[1:], guidance, x, sigma, step, settings.cfg_zero_star, settings.apg)
    if slg is not None and slg.mode == "third":
        d = slg_third_pass(x - sigma * v, x - sigma * v_cond, x - sigma * call(1, (True,)), slg.scale, slg.rescale)
        v = (x - d) / sigma
    return v


def _start(noise: Tensor, sigma: float, denoise: float, init: Tensor | None, context: Tensor) -> Tensor:
    """x at the first sigma: pure noise (a whole run: the official code's start), or for denoise < 1 the init
    latent noised to it, sigma * noise + (1 - sigma) * init (native KSampler's noise scaling for flow models)."""
    if denoise > 0.9999:
        return noise
    if init is None:
        raise VaceError(f"denoise {denoise} refines an init video: connect its latent (or give --init-video), or "
                        "set denoise to 1 to generate from noise")
    init = init.to(noise)
    refs = context.shape[2] - init.shape[2]
    if init.shape[:2] != (1, 16) or init.shape[3:] != noise.shape[3:] or refs < 0:
        raise VaceError(f"the init latent is {tuple(init.shape)}; it must be (1, 16, frames, {noise.shape[3]}, "
                        f"{noise.shape[4]}) for this VCU ({noise.shape[2]} latent frames with the references): "
                        "encode the init video at the VCU's size and length")
    if refs:  # the reference latents (mask 0: the context's inactive channels are their encoding) go in front
        init = torch.cat([context[:, :16, :refs].to(noise), init], 2)
    return sigma * noise + (1 - sigma) * init


def sample_latent(model, contexts: Sequence[Tensor], positive: Tensor, negative: Tensor | None = None,
                  streams: Sequence[ContextStream] | None = None, settings: SamplerSettings = SamplerSettings(),
                  callback=None, device=None, regions=None, layers: Sequence[Layer] = (),
                  space: TokenSpace | None = None, x0_hook=None, init_latent: Tensor | None = None) -> Tensor:
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

    Guidance variants (each off by default: plain CFG): settings.nag (NAG: row 0's cross-attention steered away
    from the negative prompt, at any guidance, as an attention hook), settings.slg (skip-layer guidance: blocks
    skipped in the unconditional row, or a third pass), settings.cfg_zero_star / settings.apg (the combination
    of the two rows). NAG and SLG wrap the regions' and the reference-leak modulation. Streams may carry strength
    curves and per-frame weights (`sampling.curves`).

    space: where the latent's tokens lie in the video (`TokenSpace.for_vcu`), for LoRAs confined to regions
    (vace_core.lora.region; needed only when the model carries some) and for the reference-leak weighting.
    x0_hook(x0, step, steps) -> x0: guidance on the predicted clean latent x0 = x - sigma v (long video's anchor
    guidance); the velocity becomes (x - x0') / sigma.
    init_latent: video-to-video with settings.denoise < 1, the video's latent (1, 16, T_lat, H/8, W/8), the
    references' latents in front or not (they are taken from the first VCU then); sampling starts at the
    schedule's sigma for that fraction (`denoise_sigmas`) from it, noised with the seed.
    """
    streams = [as_stream(s) for s in streams] if streams is not None else [ContextStream()] * len(contexts)
    if len(streams) != len(contexts):
        raise VaceError(f"{len(contexts)} VCUs but {len(streams)} strengths: give one per VCU")
    if not contexts:
        raise VaceError("VACE needs at least one VCU (use text_to_video() for plain text-to-video)")
    sigmas = denoise_sigmas(settings.steps, settings.shift, settings.schedule, settings.denoise)
    experts = as_experts(model)
    dtype, device = experts.compute_dtype, device or experts.device
    guided = negative is not None and any(g != 1 for g in experts.guidances(settings.guidance))
    text = _text_batch(positive, negative if guided else None, dtype).to(device)
    contexts = [c.to(device, dtype) for c in contexts]
    weights = [w if w is None else w.to(device) for w in frame_weights(streams, contexts[0].shape[2])]
    nag = _nag_text(settings.nag, negative, dtype, device)
    if regions is not None:
        regions.regions.check_text(positive)
    _check_guidance(settings, guided, experts)
    cache, leak = settings.step_cache, _reference_attention(settings, space, contexts[0], regions)
    stack = [*([cache.layer] if cache is not None else []), *layers,
             *([lambda net, step: ReferenceWeighted(net, leak)] if leak is not None else []),
             *([regions.layer] if regions is not None else [])]
    if cache is not None:
        cache.begin(settings.steps)
    if settings.apg is not None:
        settings.apg.begin()

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
        active = [(c, s if w is None else s * w) for c, s, w in zip(contexts, strengths, weights, strict=True) if s]
        x = x.to(dtype)

        def call(n: int, skip: tuple[bool, ...] = ()):
            """The first n rows of the CFG batch through this step's denoiser, the rows marked in `skip` without
            SLG's blocks."""
            own = text[:n]
            self_bias = SkipLayers(frozenset(settings.slg.blocks), skip) if any(skip) else None
            cross_bias = None
            if nag is not None and settings.nag.active(i, settings.steps):
                own, split = text_with_negative(own, nag)
                cross_bias = settings.nag.hook(split, n)
            with torch.no_grad():
                return net(x.expand(n, -1, -1, -1, -1), torch.full((n,), timestep, device=device), own,
                           [c for c, _ in active], [s for _, s in active], self_bias=self_bias,
                           cross_bias=cross_bias).float()

        return _guide(call, settings, x.float(), sigma, i, rows, guidance)

    generator = seeded_generator(settings.seed)  # the starting noise, then LCM's fresh noise, from one seed
    noise = make_noise((1, 16, *contexts[0].shape[2:]), generator, device)
    start = _start(noise, float(sigmas[0]), settings.denoise, init_latent, contexts[0])
    experts.weights_checked()  # the loader's NaN/inf check ran while the inputs were encoded
    with region_scope(space) as scope:
        latent = sample(denoise, start, sigmas, settings.solver, callback, generator)
    if cache is not None:
        log.info("%s", cache.stats)
    return latent


def encode_init(video: Tensor | None, vcu: VCU, vae_encode: Callable[[Tensor], Tensor], denoise: float):
    """The init video's latent (1, 16, T_lat, H/8, W/8) for denoise < 1 (None otherwise: a whole run ignores it)."""
    if video is None or denoise > 0.9999:
        return None
    if video.shape != vcu.frames.shape:
        raise VaceError(f"the init video is {video.shape[1]} frames at {video.shape[2]}x{video.shape[3]}; the VCU "
                        f"is {vcu.length} frames at {vcu.size[0]}x{vcu.size[1]}: give the init video at the VCU's "
                        "size and length")
    return vae_encode(video[None])


class ReferenceWeighted(Wrapper):
    """One step's denoiser with the reference-leak weighting as its self-attention bias."""

    staged = False

    def __init__(self, inner, weighting: ReferenceAttention):
        super().__init__(inner)
        self.weighting = weighting

    def __call__(self, x, t, text, contexts, strengths, *, self_bias=None, cross_bias=None):
        """A caller's hook (skip-layer guidance) wraps the weighting (`compose_bias`); others are refused."""
        return self.inner(x, t, text, contexts, strengths, self_bias=compose_bias(self_bias, self.weighting),
                          cross_bias=cross_bias)


def _reference_attention(settings: SamplerSettings, space: TokenSpace | None, context: Tensor, regions):
    """The reference-leak weighting of self-attention (vace_core.reference_leak), or None (today's attention)."""
    leak_weights(settings.reference_weight, settings.reference_decay, 1)  # checks the numbers
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
             callback=None, tiling=None, composite_feather: int | None = None, regions=None,
             init_video: Tensor | None = None) -> Tensor:
    """A whole VACE task: -> video (3, T, H, W) in [-1, 1]. composite_feather: paste the first VCU's kept
    pixels back (None: no compositing). regions: `regional.Regions` (positive = their composed text). init_video:
    (3, T, H, W) in [-1, 1] at the VCU's size and length, refined with settings.denoise < 1."""
    vcus = [vcus] if isinstance(vcus, VCU) else list(vcus)
    layout = regions.for_vcu(vcus[0]) if regions is not None else None
    space = TokenSpace.for_vcu(vcus[0], region_masks=None if regions is None else regions.masks)
    with torch.no_grad():
        contexts = encode_contexts(vcus, lambda v: vae.encode(v, tiling=tiling))
        init = encode_init(init_video, vcus[0], lambda v: vae.encode(v, tiling=tiling), settings.denoise)
        latent = sample_latent(model, contexts, positive, negative, streams, settings, callback, regions=layout,
                               space=space, init_latent=init)
        video = decode(latent, lambda z: vae.decode(z, tiling=tiling), len(vcus[0].references))
    return video if composite_feather is None else composite(video, vcus[0], composite_feather)
