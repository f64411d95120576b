"""Long video: VACE beyond one window (81 frames), after LVDM (He et al. 2022, arXiv 2211.13221).

A VCU (or several context streams) of any length is cut into windows the model can take; each window is a
VCU of its own, so every task (text, control, inpaint, outpaint, extension, references) works unchanged:

- autoregressive (default): window n is the user's VCU sliced to its frames, with its first frames replaced
  by the last frames already generated, kept (mask 0): LVDM's masked latent prediction expressed as a VCU.
  Optionally the last `discard` frames of each window are dropped (the end of a window is its weakest part).
- hierarchical: sparse keyframes spread over the whole duration are generated first in one window (the
  VCU's frames at those positions: control frames, kept frames), then every gap is filled by first/last-frame
  interpolation anchored on its two keyframes, so errors cannot accumulate window after window.
- fused: overlapping windows are denoised together at every step and their velocities blended per latent
  frame (linear or pyramid weights), each window with its slice of the VACE context and the reference latents
  in front (ComfyUI's context windows, with VACE sliced correctly). For comparison; no frames are carried.

Against the drift that carried frames accumulate:
- conditional latent perturbation (LVDM): the carried frames' context latents (the inactive channels) are
  mixed with noise of level s: c' = (1 - s) c + s eps (flow matching's q_sample; Wan2GP uses s = 0.02);
- latent replacement (optional): at each step the model sees the carried latents re-noised to the current
  level, x[carried] = (1 - sigma) z + sigma eps, and the final latent holds their clean encoding z;
- unconditional guidance for windows (LVDM section 4), weight w (0 = off), one more forward pass per step:
      v = v_cfg + w * (v(x | text, carried frames) - v(x | text, no carried frames));
- colour anchoring: each decoded window (after the first) is matched per frame to a FIXED anchor (the first
  window, or a reference image), never only to the previous window (vace_core.colour).

Memory: one window's latents, contexts and activations are alive at a time, plus the output video (the
frames are written into it window by window, and `on_frames` streams them out as they become final).
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

import torch
from einops import rearrange
from torch import Tensor

from .colour import METHODS, ColourAnchor, match_colours
from .denoiser import Wrapper, narrow_bias
from .errors import VaceError
from .pipeline import SamplerSettings, composite, decode, encode_contexts, encode_init, sample_latent
from .sampling import SamplingInterrupted, make_noise
from .sampling.loop import MAX_SEED
from .step_cache import CacheStats
from .vae.model import TEMPORAL_STRIDE
from .vcu import VCU, keep_frames, select_frames, to_images
from .vcu.pixels import to_video

log = logging.getLogger("vace")

MODES = ("autoregressive", "hierarchical", "fused")
FUSED_WEIGHTS = ("linear", "pyramid")
INACTIVE = slice(0, 16)  # the context latent's inactive (kept-frames) channels
PERTURB_SEED = 0x9E3779B97F4A7C15  # offsets the perturbation noise's seed from the window's sampling noise


@dataclass(frozen=True)
class LongVideoSettings:
    """Window sizes in pixel frames (4n+1 windows); see the module docstring for what each knob does."""

    window: int = 81
    overlap: int = 5
    discard: int = 0
    mode: str = "autoregressive"
    perturbation: float = 0.02
    replace_latents: bool = False
    carry_guidance: float = 0.0
    keyframes: int = 0  # hierarchical: keyframes in the first pass (4n+1); 0 = as few as the window allows
    fused_weights: str = "linear"
    colour_method: str = "reinhard"
    colour_strength: float = 1.0  # 0 = no colour anchoring
    colour_anchor: Tensor | None = None  # IMAGE (T, H, W, 3) 0..1; None = the first window
    colour_masked: bool = False  # statistics and changes only in the generated (mask 1) area

    def check(self):
        if self.mode not in MODES:
            raise VaceError(f"long video mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.window < 5 or (self.window - 1) % TEMPORAL_STRIDE:
            raise VaceError(f"window {self.window}: a window is 4n+1 frames, at least 5 (81 is what VACE was "
                            "trained on)")
        if self.overlap < 1 or self.discard < 0 or self.window - self.overlap - self.discard < 1:
            raise VaceError(f"overlap {self.overlap} and discard {self.discard} leave no new frames in a "
                            f"{self.window}-frame window: overlap >= 1 (5 recommended), discard >= 0, and "
                            "overlap + discard < window")
        if not 0 <= self.perturbation <= 1:
            raise VaceError(f"perturbation is a noise level from 0 to 1 (0.02 recommended), got {self.perturbation}")
        if self.carry_guidance < 0:
            raise VaceError(f"carry_guidance is a weight >= 0 (0 = off), got {self.carry_guidance}")
        if self.fused_weights not in FUSED_WEIGHTS:
            raise VaceError(f"fused weights {self.fused_weights!r}: choose one of {', '.join(FUSED_WEIGHTS)}")
        if self.colour_method not in METHODS:
            raise VaceError(f"colour method {self.colour_method!r}: choose one of {', '.join(METHODS)}")
        if not 0 <= self.colour_strength <= 1:
            raise VaceError(f"colour_strength is from 0 (off) to 1 (full), got {self.colour_strength}")


@dataclass(frozen=True)
class Window:
    """One window: which frames of the video it covers, which it carries over, which it writes."""

    positions: tuple[int, ...]  # the video's frame index of each window frame (4n+1 of them)
    kept: tuple[int, ...] = ()  # window frames taken from frames generated before (mask 0)
    output: tuple[int, ...] = ()  # window frames written into the video

    @property
    def start(self) -> int:
        return self.positions[0]

    @property
    def end(self) -> int:
        return self.positions[-1] + 1


def _ceil_4n1(frames: int) -> int:
    """The smallest 4n+1 count >= frames."""
    return -(-(frames - 1) // TEMPORAL_STRIDE) * TEMPORAL_STRIDE + 1


def single_window(length: int) -> Window:
    return Window(tuple(range(length)), (), tuple(range(length)))


def autoregressive_plan(length: int, window: int = 81, overlap: int = 5, discard: int = 0) -> list[Window]:
    """Windows of `window` frames, each carrying the last `overlap` frames written before it and writing all
    but its last `discard`. The last window is the shortest 4n+1 one that reaches the end, placed to end at
    the last frame (so it may carry more than `overlap` frames) and discards nothing."""
    LongVideoSettings(window=window, overlap=overlap, discard=discard).check()
    if length <= window:
        return [single_window(length)]
    plan, written = [Window(tuple(range(window)), (), tuple(range(window - discard)))], window - discard
    while written < length:
        start = written - overlap
        if length - start > window:
            kept, size, last = overlap, window, False
        else:
            size = _ceil_4n1(length - start)
            start, last = length - size, True
            kept = written - start
        end = size if last else size - discard
        plan.append(Window(tuple(range(start, start + size)), tuple(range(kept)), tuple(range(kept, end))))
        written = start + end
    return plan


def keyframe_positions(length: int, window: int, keyframes: int = 0) -> list[int]:
    """Keyframes 4 frames apart or more (so each gap is a 4n+1 window), first and last frame included, spread
    evenly; as few as keep every gap within a window when `keyframes` is 0."""
    units = (length - 1) // TEMPORAL_STRIDE  # the video in steps of 4 frames
    per_window = (window - 1) // TEMPORAL_STRIDE
    if keyframes == 0:
        gaps = -(-units // per_window)
        keyframes = _ceil_4n1(gaps + 1)
    if keyframes < 5 or (keyframes - 1) % TEMPORAL_STRIDE or keyframes > window:
        raise VaceError(f"{keyframes} keyframes: the keyframe pass is one window, so 4n+1 keyframes, from 5 to the "
                        f"window ({window}); 0 chooses them")
    if keyframes - 1 > units:
        raise VaceError(f"{keyframes} keyframes do not fit in {length} frames (they must be at least 4 frames "
                        f"apart): use at most {units + 1 if units % 4 == 0 else _ceil_4n1(units + 1) - 4}")
    gaps = keyframes - 1
    positions = [TEMPORAL_STRIDE * ((2 * i * units + gaps) // (2 * gaps)) for i in range(keyframes)]
    if max(b - a for a, b in pairwise(positions)) + 1 > window:
        raise VaceError(f"{keyframes} keyframes leave gaps longer than the {window}-frame window over {length} "
                        f"frames: use more keyframes, a longer window, or autoregressive mode")
    return positions


def hierarchical_plan(length: int, window: int = 81, keyframes: int = 0) -> list[Window]:
    """The keyframe window (frames spread over the whole video), then one interpolation window per gap that
    keeps its two keyframes and writes the frames between them."""
    if length <= window:
        return [single_window(length)]
    keys = keyframe_positions(length, window, keyframes)
    fills = [Window(tuple(range(a, b + 1)), (0, b - a), tuple(range(1, b - a))) for a, b in pairwise(keys)]
    return [Window(tuple(keys), (), tuple(range(len(keys)))), *fills]


def plan_windows(length: int, settings: LongVideoSettings) -> list[Window]:
    settings.check()
    if settings.mode == "hierarchical":
        return hierarchical_plan(length, settings.window, settings.keyframes)
    return autoregressive_plan(length, settings.window, settings.overlap, settings.discard)


def kept_latents(kept: Sequence[int], length: int) -> list[int]:
    """Latent frames whose pixel frames are all kept (latent 0 holds frame 0, latent j > 0 frames 4j-3..4j)."""
    kept = set(kept)
    spans = [[0], *(range(TEMPORAL_STRIDE * j - 3, TEMPORAL_STRIDE * j + 1) for j in range(1, (length + 2) // 4))]
    return [j for j, frames in enumerate(spans) if kept.issuperset(frames)]


def fused_spans(latent_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Latent-frame ranges [a, b) of `window` latents, spread evenly from the start to the end so that neighbours
    overlap by at least `overlap`."""
    if latent_frames <= window:
        return [(0, latent_frames)]
    room = latent_frames - window
    count = -(-room // max(1, window - overlap)) + 1  # windows, spread evenly: overlaps of at least `overlap`
    return [(a, a + window) for a in (round(i * room / (count - 1)) for i in range(count))]


def fused_weights(spans: list[tuple[int, int]], kind: str) -> list[Tensor]:
    """Per span, one weight per latent frame: linear ramps across the overlaps (flat elsewhere, and at the
    video's ends), or a pyramid peaking at the window's middle."""
    weights = []
    for i, (a, b) in enumerate(spans):
        size = b - a
        if kind == "pyramid":
            w = torch.minimum(torch.arange(1, size + 1), torch.arange(size, 0, -1)).double()
        else:
            w = torch.ones(size, dtype=torch.float64)
            if i > 0:
                ramp = spans[i - 1][1] - a
                w[:ramp] = torch.arange(1, ramp + 1, dtype=torch.float64) / (ramp + 1)
            if i < len(spans) - 1:
                ramp = b - spans[i + 1][0]
                down = torch.arange(ramp, 0, -1, dtype=torch.float64) / (ramp + 1)
                w[size - ramp:] = torch.minimum(w[size - ramp:], down)
        weights.append(w)
    return weights


class CarryGuidance(Wrapper):
    """The DiT with LVDM's unconditional guidance for windows: v + w (v_pos - v_pos without carried frames).

    Adding the same term to both CFG halves adds it once to the guided result (cfg is affine). `pairs` maps
    each context tensor (by identity) to the same window's context without the carried frames. The window-free
    pass is the positive row alone, with that row of the attention biases (regional prompts)."""

    staged = False

    def __init__(self, inner, pairs: list[tuple[Tensor, Tensor]], weight: float):
        super().__init__(inner)
        self.pairs, self.weight = pairs, weight

    def _free(self, context: Tensor) -> Tensor:
        return next(free for carried, free in self.pairs if carried is context)

    def __call__(self, x, t, text, contexts, strengths, *, self_bias=None, cross_bias=None):
        v = self.inner(x, t, text, contexts, strengths, self_bias=self_bias, cross_bias=cross_bias)
        positive = slice(0, 1)
        v_free = self.inner(x[:1], t[:1], text[:1], [self._free(c) for c in contexts], strengths,
                            self_bias=narrow_bias(self_bias, rows=positive),
                            cross_bias=narrow_bias(cross_bias, rows=positive))
        return v + self.weight * (v[:1] - v_free)


class FusedWindows(Wrapper):
    """The DiT run on overlapping latent windows, velocities blended per latent frame (sum w v / sum w).

    Each window sees the reference latents (the first `references` frames) in front of its slice of the latent,
    of every context and of the attention biases (regional prompts: the window's tokens as queries, and as keys
    of self-attention); the references' velocity is blended the same way. A step cache inside it keeps one cache
    per window position (the i-th window of every step shares one)."""

    staged = False

    def __init__(self, inner, spans: list[tuple[int, int]], weights: list[Tensor], references: int):
        super().__init__(inner)
        self.spans, self.references = spans, references
        total = torch.zeros(spans[-1][1], dtype=torch.float64)
        for (a, b), w in zip(spans, weights, strict=True):
            total[a:b] += w
        self.weights = [(w / total[a:b]).float() for (a, b), w in zip(spans, weights, strict=True)]

    def _tokens(self, frames: Tensor, x: Tensor) -> Tensor:
        """Token indices (t h w order) of latent frames `frames` of x (B, C, T, H, W)."""
        pt, ph, pw = self.config.patch_size
        per_frame = (x.shape[3] // ph) * (x.shape[4] // pw)
        return rearrange(frames[:, None] // pt * per_frame + torch.arange(per_frame), "t n -> (t n)")

    def __call__(self, x, t, text, contexts, strengths, *, self_bias=None, cross_bias=None):
        refs = self.references
        v = torch.zeros_like(x)  # the DiT answers in x's dtype
        for (a, b), w in zip(self.spans, self.weights, strict=True):
            index = torch.cat([torch.arange(refs), torch.arange(refs + a, refs + b)])
            tokens = self._tokens(index, x) if self_bias is not None or cross_bias is not None else None
            scales = [s[index.to(s.device)] if isinstance(s, Tensor) else s for s in strengths]  # per-frame ones
            v_w = self.inner(x[:, :, index.to(x.device)], t, text, [c[:, :, index.to(c.device)] for c in contexts],
                             scales, self_bias=narrow_bias(self_bias, queries=tokens, keys=tokens),
                             cross_bias=narrow_bias(cross_bias, queries=tokens))
            w = torch.cat([torch.full((refs,), 1.0 / len(self.spans)), w]).to(v_w)
            v[:, :, index.to(x.device)] += v_w * w[:, None, None]  # w (T_w,) broadcasts over (B, C, T_w, h, w)
        return v


class LatentReplacement(Wrapper):
    """What the DiT sees at this step: the carried latents (latent frames `index`) re-noised to the step's level,
    (1 - sigma) z + sigma eps (the solver keeps its own x)."""

    staged = False

    def __init__(self, inner, clean: Tensor, noise: Tensor, index: list[int], sigma: float):
        super().__init__(inner)
        self.clean, self.noise, self.index, self.sigma = clean, noise, index, sigma

    def __call__(self, x, t, text, contexts, strengths, *, self_bias=None, cross_bias=None):
        x = x.clone()
        x[:, :, self.index] = ((1 - self.sigma) * self.clean + self.sigma * self.noise).to(x)
        return self.inner(x, t, text, contexts, strengths, self_bias=self_bias, cross_bias=cross_bias)


@dataclass
class LongVideo:
    """The result: the finished frames (all of them unless the run was interrupted) and how far it got."""

    video: Tensor  # (3, T_done, H, W) in [-1, 1]
    windows_done: int
    windows: int
    cache_stats: CacheStats | None = None  # the step cache's evaluations over every window (None: no cache)

    @property
    def interrupted(self) -> bool:
        return self.windows_done < self.windows


Progress = Callable[[int, int, int, int, Tensor, Tensor], bool | None]  # window, windows, step, steps, x, x0


def _carried_units(vcus: list[VCU], window: Window, video: Tensor) -> tuple[list[VCU], list[VCU]]:
    """(the window's VCUs with the carried frames kept, the same without them) for every stream."""
    free = [select_frames(v, window.positions) for v in vcus]
    if not window.kept:
        return free, free
    carried = video[:, [window.positions[k] for k in window.kept]]
    return [keep_frames(u, window.kept, carried) for u in free], free


def _perturb(contexts: list[Tensor], index: list[int], level: float, seed: int) -> list[Tensor]:
    """LVDM's conditional latent perturbation on the carried frames' inactive latents: (1 - s) c + s eps."""
    out = []
    for k, c in enumerate(contexts):
        c = c.clone()
        clean = c[:, INACTIVE, index]
        noise = make_noise(clean.shape, (seed + PERTURB_SEED + k) % (MAX_SEED + 1), c.device, c.dtype)
        c[:, INACTIVE, index] = (1 - level) * clean + level * noise
        out.append(c)
    return out


def sample_window(model, vae, units: list[VCU], free: list[VCU], kept: Sequence[int], positive, negative, streams,
                  settings, long: LongVideoSettings, callback=None, tiling=None, device=None, regions=None,
                  init_video: Tensor | None = None) -> Tensor:
    """One window: its VCUs (`kept`: the window frames carried over; `free`: the VCUs without them) -> decoded
    frames (3, T, H, W) in [-1, 1]. With nothing carried this is exactly pipeline.generate. regions: the
    window's `regional.Regions` (its slice of the masks). init_video: the window's frames of the video refined
    with settings.denoise < 1."""
    encode = lambda v: vae.encode(v, tiling=tiling)  # noqa: E731
    contexts = encode_contexts(units, encode)
    init = encode_init(init_video, units[0], encode, settings.denoise)
    refs = len(units[0].references)
    carried = [refs + j for j in kept_latents(kept, units[0].length)]
    layers = []
    device = device or model.device
    if carried:
        clean = contexts[0][:, INACTIVE, carried].to(device)
        if long.perturbation:
            contexts = _perturb(contexts, carried, long.perturbation, settings.seed)
        if long.carry_guidance:
            contexts = [c.to(device, model.compute_dtype) for c in contexts]
            pairs = list(zip(contexts, [c.to(device, model.compute_dtype) for c in encode_contexts(free, encode)],
                             strict=True))
            layers.append(lambda net, step: CarryGuidance(net, pairs, long.carry_guidance))
        if long.replace_latents:
            noise = make_noise((1, 16, *contexts[0].shape[2:]), settings.seed, device)[:, :, carried]
            layers.append(lambda net, step: LatentReplacement(net, clean, noise, carried, step.sigma))
    layout = regions.for_vcu(units[0]) if regions is not None else None
    latent = sample_latent(model, contexts, positive, negative, streams, settings, callback, device, layout, layers,
                           init_latent=init)
    if long.replace_latents and carried:
        latent[:, :, carried] = clean.to(latent)
    return decode(latent, lambda z: vae.decode(z, tiling=tiling), refs)


class _Output:
    """The output video, written window by window; `on_frames(frames)` gets each run of frames that became
    final, in order (the command line streams them to the video file)."""

    def __init__(self, length: int, size: tuple[int, int], on_frames=None):
        self.video = torch.zeros(3, length, *size)
        self.final = torch.zeros(length, dtype=torch.bool)
        self.emitted, self.on_frames = 0, on_frames

    def write(self, positions: list[int], frames: Tensor):
        self.video[:, positions] = frames.to(self.video)
        self.final[positions] = True
        done = self.emitted
        while done < len(self.final) and self.final[done]:
            done += 1
        if self.on_frames is not None and done > self.emitted:
            self.on_frames(self.video[:, self.emitted:done])
        self.emitted = done


def _anchor_colours(frames: Tensor, masks: Tensor, anchor: ColourAnchor | None, long: LongVideoSettings):
    """(frames (3, T, H, W) colour-matched to the anchor, the anchor): the first window becomes the anchor."""
    if not long.colour_strength:
        return frames, anchor
    images = to_images(frames)
    masks = masks if long.colour_masked else None
    if anchor is None:
        return frames, ColourAnchor.from_images(images, masks)
    matched = match_colours(images, anchor, long.colour_method, long.colour_strength, masks)
    return to_video(matched).to(frames), anchor


def generate_long(model, vae, vcus: VCU | Sequence[VCU], positive: Tensor, negative: Tensor | None = None,
                  streams=None, settings: SamplerSettings | None = None,
                  long: LongVideoSettings = LongVideoSettings(), progress: Progress | None = None, tiling=None,
                  composite_feather: int | None = None, on_frames=None, device=None, regions=None,
                  init_video: Tensor | None = None) -> LongVideo:
    """A VACE task of any length -> LongVideo (video (3, T, H, W) in [-1, 1]). A VCU of at most `window`
    frames is one window: exactly pipeline.generate. Window i samples with seed + i. progress(window,
    windows, step, steps, x, x0) returning False stops after that step: the finished windows are returned.
    model: a denoiser or Wan2.2 `Experts` (every window switches expert at the boundary). regions: a
    `regional.Regions` over the whole video (positive = its text): each window gets its frames of the masks.
    init_video (3, T, H, W) in [-1, 1], the VCU's size and length: video-to-video with settings.denoise < 1, each
    window refining its own frames of it."""
    vcus = [vcus] if isinstance(vcus, VCU) else list(vcus)
    settings = settings or SamplerSettings()
    if len({(v.length, v.size) for v in vcus}) > 1:
        raise VaceError("the VCUs differ in length or size: build every stream at one size and length")
    long.check()
    if regions is not None:
        regions.check_length(vcus[0].length)
    if long.mode == "fused":
        return _generate_fused(model, vae, vcus, positive, negative, streams, settings, long, progress, tiling,
                               composite_feather, on_frames, device, regions, init_video)
    plan = plan_windows(vcus[0].length, long)
    out = _Output(vcus[0].length, vcus[0].size, on_frames)
    anchor = None if long.colour_anchor is None else ColourAnchor.from_images(long.colour_anchor)
    cache = settings.step_cache
    stats = None if cache is None else CacheStats()
    with torch.no_grad():
        for i, window in enumerate(plan):
            log.info("VACE long video: window %d of %d (frames %d-%d, %d carried)", i + 1, len(plan),
                     window.start, window.end - 1, len(window.kept))
            units, free = _carried_units(vcus, window, out.video)
            step = None if progress is None else \
                (lambda s, n, x, x0, i=i: progress(i, len(plan), s, n, x, x0))
            try:
                frames = sample_window(model, vae, units, free, window.kept, positive, negative, streams,
                                       replace(settings, seed=(settings.seed + i) % (MAX_SEED + 1)), long, step,
                                       tiling, device, regions and regions.frames(window.positions),
                                       None if init_video is None else init_video[:, window.positions])
            except SamplingInterrupted:
                log.warning("VACE long video: stopped in window %d of %d; returning the %d finished frames",
                            i + 1, len(plan), out.emitted)
                return LongVideo(out.video[:, :out.emitted], i, len(plan), stats)
            if cache is not None:
                stats += cache.stats
            frames, anchor = _anchor_colours(frames, units[0].masks, anchor, long)
            if composite_feather is not None:
                frames = composite(frames, units[0], composite_feather)
            written = list(window.output)
            out.write([window.positions[k] for k in written], frames[:, written])
    return LongVideo(out.video, len(plan), len(plan), stats)


def _generate_fused(model, vae, vcus, positive, negative, streams, settings, long, progress, tiling,
                    composite_feather, on_frames, device, regions, init_video) -> LongVideo:
    """Fused windows over the whole latent; a VCU within one window is exactly pipeline.generate. Regional
    prompts: the whole video's layout, each window attending with its tokens' part of it."""
    with torch.no_grad():
        contexts = encode_contexts(vcus, lambda v: vae.encode(v, tiling=tiling))
        init = encode_init(init_video, vcus[0], lambda v: vae.encode(v, tiling=tiling), settings.denoise)
        refs = len(vcus[0].references)
        spans = fused_spans(contexts[0].shape[2] - refs, (long.window - 1) // TEMPORAL_STRIDE + 1,
                            (long.overlap - 1) // TEMPORAL_STRIDE + 1)
        weights = fused_weights(spans, long.fused_weights)
        layers = [] if len(spans) == 1 else [lambda net, step: FusedWindows(net, spans, weights, refs)]
        step = None if progress is None else (lambda s, n, x, x0: progress(0, 1, s, n, x, x0))
        layout = regions.for_vcu(vcus[0]) if regions is not None else None
        try:
            latent = sample_latent(model, contexts, positive, negative, streams, settings, step, device, layout,
                                   layers, init_latent=init)
        except SamplingInterrupted:
            return LongVideo(torch.zeros(3, 0, *vcus[0].size), 0, 1)
        video = decode(latent, lambda z: vae.decode(z, tiling=tiling), refs)
    if composite_feather is not None:
        video = composite(video, vcus[0], composite_feather)
    if on_frames is not None:
        on_frames(video)
    return LongVideo(video, 1, 1, None if settings.step_cache is None else settings.step_cache.stats)
