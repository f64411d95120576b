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
  window, or a reference image), never only to the previous window (vace_core.colour);
- anchor guidance (inside sampling, weight w, 0 = off): the early steps' predicted clean latent is pulled toward
  the per-channel statistics of the first window's latent or of the carried frames (vace_core.anchor_guidance).

Memory: one window's latents, contexts and activations are alive at a time, plus the output video (the
frames are written into it window by window, and `on_frames` streams them out as they become final).
"""

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from itertools import pairwise

import torch
from einops import rearrange
from torch import Tensor

from .anchor_guidance import SOURCES, AnchorStats, anchor_hook
from .colour import METHOD_HELP, METHODS, ColourAnchor, match_colours
from .denoiser import Wrapper, narrow_bias
from .errors import VaceError
from .lora.region import TokenSpace
from .pipeline import SamplerSettings, composite, decode, encode_contexts, encode_init, sample_latent
from .sampling import SamplingInterrupted, make_noise
from .sampling.loop import MAX_SEED
from .settings import check, knob
from .step_cache import CacheStats
from .timeline import Timeline, pinned_frames
from .vae.model import TEMPORAL_STRIDE
from .vcu import VCU, keep_frames, select_frames, to_images
from .vcu.pixels import to_video

log = logging.getLogger("vace")

MODES = ("autoregressive", "hierarchical", "fused")
FUSED_WEIGHTS = ("linear", "pyramid")
INACTIVE = slice(0, 16)  # the context latent's inactive (kept-frames) channels
PERTURB_SEED = 0x9E3779B97F4A7C15  # offsets the perturbation noise's seed from the window's sampling noise


@dataclass(frozen=True, kw_only=True)
class LongVideoSettings:
    """Window sizes in pixel frames (4n+1 windows); see the module docstring for what each knob does. The knobs'
    ranges are the Long Video Sampler's and the command line's."""

    mode: str = knob("autoregressive", "autoregressive: each window continues from the last frames of the one "
                     "before (best continuity). hierarchical: sparse keyframes over the whole video first, then "
                     "each gap interpolated between two keyframes (no accumulated drift; motion between keyframes "
                     "must be inferable). fused: overlapping windows denoised together and blended every step (no "
                     "carried frames; for comparison, softer seams but less coherent).", choices=MODES)
    window: int = knob(81, "Frames per window (4n+1). 81 is what VACE was trained on; shorter windows need less "
                       "memory but carry the video forward more often (more seams, more drift).",
                       min=5, max=257, step=4)
    overlap: int = knob(5, "Frames each window takes over from the one before, kept as given (mask 0). 5 (two "
                        "latent frames) carries motion; more gives smoother seams but fewer new frames per window. "
                        "fused mode: the overlap of the blended windows (17 blends well).", min=1, max=255)
    discard: int = knob(0, "Frames dropped from the end of each window but the last (a window's last frames are "
                        "its weakest); the next window starts earlier instead.", min=0, max=64)
    perturbation: float = knob(0.02, "Noise level mixed into the carried frames' context (LVDM conditional latent "
                               "perturbation): makes each window tolerant of small errors in the frames it "
                               "continues from, so errors compound less. 0.02 as Wan2GP; 0 = off; above 0.1 "
                               "loosens continuity.", min=0.0, max=1.0, step=0.005)
    replace_latents: bool = knob(False, "At every step the model sees the carried frames' latents re-noised to the "
                                 "current level (latent replacement): a firmer grip on the carried frames, fewer "
                                 "seams.")
    carry_guidance: float = knob(0.0, "LVDM unconditional guidance: pushes each window away from what it would "
                                 "make without the carried frames (v + w (v_carried - v_without)); fights slow "
                                 "degradation. One more model pass per step; 0 = off, 0.5-2 to try.",
                                 min=0.0, max=10.0, step=0.1)
    keyframes: int = knob(0, "hierarchical: keyframes in the first pass (4n+1, at most the window). 0 = as few as "
                          "keep each gap within a window; more keyframes follow fast motion better.", min=0, max=257)
    fused_weights: str = knob("linear", "fused: how overlapping windows blend: linear ramps across the overlaps, "
                              "or pyramids.", choices=FUSED_WEIGHTS)
    colour_method: str = knob("reinhard", METHOD_HELP, choices=METHODS)
    colour_strength: float = knob(1.0, "How fully each window's colours are matched to the anchor (0 = off). "
                                  "Removes colour and exposure drift between windows; lower it when the scene's "
                                  "colours really change.", min=0.0, max=1.0, step=0.05)
    colour_anchor: Tensor | None = None  # IMAGE (T, H, W, 3) 0..1; None = the first window
    colour_masked: bool = knob(False, "Take colour statistics and make changes only where the VCU generates (mask "
                               "white).")
    anchor_guidance: float = knob(0.0, "Anchor guidance inside sampling: during the early steps each window's "
                                  "predicted clean latent is pulled toward the anchor's per-channel colour statistics "
                                  "(0 = off; 0.3-1 to try). Works with colour_strength (post-hoc matching) or alone.",
                                  min=0.0, max=5.0, step=0.05)
    anchor_end: float = knob(0.3, "Anchor guidance: the fraction of the steps it runs in (the layout and colours form "
                             "early).", min=0.0, max=1.0, step=0.05)
    anchor_source: str = knob("first", "Anchor guidance's anchor: first = the first window (fixed, drift cannot "
                              "accumulate); kept = each window's carried frames.", choices=SOURCES)

    def check(self):
        check(self)
        if (self.window - 1) % TEMPORAL_STRIDE:
            raise VaceError(f"window {self.window}: a window is 4n+1 frames, at least 5 (81 is what VACE was "
                            "trained on)")
        if self.window - self.overlap - self.discard < 1:
            raise VaceError(f"overlap {self.overlap} and discard {self.discard} leave no new frames in a "
                            f"{self.window}-frame window: overlap >= 1 (5 recommended), discard >= 0, and "
                            "overlap + discard < window")


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
    per window position (the i-th window of every step shares one). `space` (the whole latent's TokenSpace) is
    narrowed to each window's frames, so region LoRAs see their masks' slice."""

    staged = False

    def __init__(self, inner, spans: list[tuple[int, int]], weights: list[Tensor], references: int,
                 space: TokenSpace | None = None):
        super().__init__(inner)
        self.spans, self.references, self.space = spans, references, space
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
            with self.space.window(index) if self.space is not None else nullcontext():
                v_w = self.inner(x[:, :, index.to(x.device)], t, text,
                                 [c[:, :, index.to(c.device)] for c in contexts], scales,
                                 self_bias=narrow_bias(self_bias, queries=tokens, keys=tokens),
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
    records: list["WindowRecord"] = field(default_factory=list)  # what each window ran with (the saved state)
    anchor: ColourAnchor | None = None  # the colour anchor the windows were matched to

    @property
    def interrupted(self) -> bool:
        return self.windows_done < self.windows


Progress = Callable[[int, int, int, int, Tensor, Tensor], bool | None]  # window, windows, step, steps, x, x0
LATER = ("keep", "regenerate")


@dataclass(frozen=True)
class WindowRecord:
    """One window of a run, for its saved state: its frames (video positions, carried, written), its seed and
    the timeline prompt it read (None: the positive prompt)."""

    positions: tuple[int, ...]
    kept: tuple[int, ...]
    output: tuple[int, ...]
    seed: int
    prompt: int | None


@dataclass
class Resume:
    """Re-render from a saved state: the saved video (3, T, H, W) and colour anchor are reused for every window
    before `window`; window `window` is sampled again (with the timeline's seed / prompt for it), and the later
    windows are regenerated, or kept with the seam re-blended (`later`, see `reblend_seam`)."""

    video: Tensor
    anchor: ColourAnchor | None
    records: list[WindowRecord]
    window: int
    later: str = "keep"

    def check(self, windows: int, length: int, mode: str):
        if not 0 <= self.window < windows:
            raise VaceError(f"cannot re-render window {self.window}: the saved run has {windows} windows (0 to "
                            f"{windows - 1})")
        if self.later not in LATER:
            raise VaceError(f"later windows: choose one of {', '.join(LATER)}, got {self.later!r}")
        if self.video.shape[1] != length:
            raise VaceError(f"the saved video has {self.video.shape[1]} frames but the VCU {length}: re-render with "
                            "the state's own VCU")
        if mode == "hierarchical" and self.window == 0 and self.later == "keep":
            raise VaceError("the later windows interpolate between window 0's keyframes: re-rendering window 0 "
                            "of a hierarchical run must regenerate them (later windows: regenerate)")


def reblend_seam(frames: Tensor, positions: Sequence[int], saved: Tensor, seam: Sequence[int]) -> None:
    """Keeping the windows after a re-rendered one: over the frames the next window carried (`seam`, n video
    positions), the re-rendered window's frames (3, T, H, W) at `positions` fade into the saved ones the next
    window continued from, in place:
        new[p_j] <- (1 − a_j) · new[p_j] + a_j · saved[p_j],   a_j = (j + 1) / (n + 1),
    computed as new + a_j (saved − new), so frames the re-render left unchanged stay bit for bit."""
    where = {p: k for k, p in enumerate(positions)}
    for j, p in enumerate(seam):
        a = (j + 1) / (len(seam) + 1)
        frames[:, where[p]] += a * (saved[:, p].to(frames) - frames[:, where[p]])


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
                  space: TokenSpace | None = None, anchor: AnchorStats | None = None,
                  init_video: Tensor | None = None) -> Tensor:
    """One window: its VCUs (`kept`: the window frames carried over; `free`: the VCUs without them) -> decoded
    frames (3, T, H, W) in [-1, 1]. With nothing carried this is exactly pipeline.generate. regions: the
    window's `regional.Regions` (its slice of the masks). space: the window's TokenSpace (its video frames), for
    region LoRAs. anchor: the first window's latent statistics for anchor guidance (None: from the kept frames
    with anchor_source "kept", else no guidance). init_video: the window's frames of the video refined with
    settings.denoise < 1."""
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
    stats = anchor
    if long.anchor_guidance and long.anchor_source == "kept" and carried:
        stats = AnchorStats.of(clean.float())
    hook = None if stats is None else anchor_hook(stats, long.anchor_guidance, long.anchor_end, refs)
    layout = regions.for_vcu(units[0]) if regions is not None else None
    latent = sample_latent(model, contexts, positive, negative, streams, settings, callback, device, layout, layers,
                           space=space or TokenSpace.for_vcu(units[0], region_masks=getattr(regions, "masks", None)),
                           x0_hook=hook, init_latent=init)
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
        self._emit()

    def resume(self, saved: Tensor, positions: list[int], keep_new: bool = False):
        """Frames of a saved run taken as final (keep_new: frames already written here stay)."""
        fresh = [p for p in positions if not (keep_new and self.final[p])]
        self.video[:, fresh] = saved[:, fresh].to(self.video)
        self.final[positions] = True
        self._emit()

    def _emit(self):
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
                  timeline: Timeline | None = None, resume: Resume | None = None,
                  init_video: Tensor | None = None) -> LongVideo:
    """A VACE task of any length -> LongVideo (video (3, T, H, W) in [-1, 1]). A VCU of at most `window`
    frames is one window: exactly pipeline.generate. Window i samples with seed + i. progress(window,
    windows, step, steps, x, x0) returning False stops after that step: the finished windows are returned.
    model: a denoiser or Wan2.2 `Experts` (every window switches expert at the boundary). regions: a
    `regional.Regions` over the whole video (positive = its text): each window gets its frames of the masks.
    timeline: per-window prompts, references, end frames, seeds, loop (vace_core.timeline). resume: re-render
    one window of a saved run (see Resume). init_video (3, T, H, W) in [-1, 1], the VCU's size and length:
    video-to-video with settings.denoise < 1, each window refining its own frames of it."""
    vcus = [vcus] if isinstance(vcus, VCU) else list(vcus)
    settings = settings or SamplerSettings()
    if len({(v.length, v.size) for v in vcus}) > 1:
        raise VaceError("the VCUs differ in length or size: build every stream at one size and length")
    long.check()
    if regions is not None:
        regions.check_length(vcus[0].length)
        if timeline is not None and timeline.prompts:
            raise VaceError("regional prompts and a timeline's per-window prompts cannot be combined: the regions "
                            "steer one prompt's words, which a window's own prompt replaces. Put the regions' words "
                            "in one prompt for every window, or drop the timeline's prompts (its references, end "
                            "frames and seeds still work)")
    if long.mode == "fused":
        if timeline is not None:
            timeline.check(1, "fused")
        if resume is not None:
            raise VaceError("fused windows are denoised together, none can be re-rendered alone: use "
                            "autoregressive or hierarchical mode")
        return _generate_fused(model, vae, vcus, positive, negative, streams, settings, long, progress, tiling,
                               composite_feather, on_frames, device, regions, init_video)
    plan = plan_windows(vcus[0].length, long)
    if timeline is not None:
        timeline = timeline.resolved(len(plan))
        timeline.check(len(plan), long.mode)
    if resume is not None:
        resume.check(len(plan), vcus[0].length, long.mode)
    out = _Output(vcus[0].length, vcus[0].size, on_frames)
    anchor = None if long.colour_anchor is None else ColourAnchor.from_images(long.colour_anchor)
    cache = settings.step_cache
    stats = None if cache is None else CacheStats()
    first, records, previous = 0, [], None
    if resume is not None:
        first, anchor = resume.window, resume.anchor if resume.window > 0 else anchor
        out.resume(resume.video, [window.positions[k] for window in plan[:first] for k in window.output])
        records, previous = list(resume.records[:first]), (resume.records[first - 1].prompt if first else None)
    keep_later = resume is not None and resume.later == "keep"
    latent_anchor = _latent_anchor(vae, out.video, plan[0], long, tiling) if first > 0 else None
    with torch.no_grad():
        for i in range(first, len(plan)):
            window = plan[i]
            log.info("VACE long video: window %d of %d (frames %d-%d, %d carried)", i + 1, len(plan),
                     window.start, window.end - 1, len(window.kept))
            prompt = None if timeline is None else timeline.prompt_index(i, window.positions[window.output[0]])
            seed = (settings.seed + i) % (MAX_SEED + 1)
            seed = seed if timeline is None else timeline.seed(i, seed)
            text = positive if timeline is None else \
                timeline.positive(prompt, previous, len(window.kept) / len(window.positions), positive)
            units, free = _carried_units(vcus, window, out.video)
            pinned = pinned_frames(timeline, i, i == len(plan) - 1, window.positions, len(window.kept), out.video,
                                   long.overlap, vcus[0].size)
            if timeline is not None:
                units, free = timeline.edit_units(i, units, free, pinned)
            step = None if progress is None else \
                (lambda s, n, x, x0, i=i: progress(i, len(plan), s, n, x, x0))
            try:
                frames = sample_window(model, vae, units, free, window.kept, text, negative, streams,
                                       replace(settings, seed=seed), long, step, tiling, device,
                                       None if regions is None else regions.frames(window.positions),
                                       TokenSpace.for_vcu(units[0], window.positions,
                                                          getattr(regions, "masks", None)), latent_anchor,
                                       None if init_video is None else init_video[:, window.positions])
            except SamplingInterrupted:
                log.warning("VACE long video: stopped in window %d of %d; returning the %d finished frames",
                            i + 1, len(plan), out.emitted)
                return LongVideo(out.video[:, :out.emitted], i, len(plan), stats, records, anchor)
            if cache is not None:
                stats += cache.stats
            frames, anchor = _anchor_colours(frames, units[0].masks, anchor, long)
            if composite_feather is not None:
                frames = composite(frames, units[0], composite_feather)
            for k, pixels in pinned.items():  # kept frames are given: written exactly
                frames[:, k] = pixels.to(frames)
            if keep_later and i + 1 < len(plan) and long.mode == "autoregressive":  # fills share only keyframes
                seam = [plan[i + 1].positions[k] for k in plan[i + 1].kept]
                reblend_seam(frames, window.positions, resume.video, seam)
            written = list(window.output)
            out.write([window.positions[k] for k in written], frames[:, written])
            if i == 0:
                latent_anchor = _latent_anchor(vae, out.video, plan[0], long, tiling)
            records.append(WindowRecord(window.positions, window.kept, window.output, seed, prompt))
            previous = prompt
            if keep_later:  # the later windows' frames as saved
                out.resume(resume.video, [w.positions[k] for w in plan[i + 1:] for k in w.output], keep_new=True)
                records += resume.records[i + 1:]
                break
    return LongVideo(out.video, len(plan), len(plan), stats, records, anchor)


def _latent_anchor(vae, video: Tensor, first: Window, long: LongVideoSettings, tiling) -> AnchorStats | None:
    """Anchor guidance's fixed anchor: the statistics of the first window's written frames, encoded (so a
    re-render from a saved video finds the same anchor); None unless guidance uses the first window."""
    if not long.anchor_guidance or long.anchor_source != "first":
        return None
    written = [first.positions[k] for k in first.output]
    frames = video[:, written[:(len(written) - 1) // TEMPORAL_STRIDE * TEMPORAL_STRIDE + 1]]  # 4n+1 for the VAE
    return AnchorStats.of(vae.encode(frames[None], tiling=tiling).float())


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
        space = TokenSpace.for_vcu(vcus[0], region_masks=getattr(regions, "masks", None))
        layers = [] if len(spans) == 1 else [lambda net, step: FusedWindows(net, spans, weights, refs, space)]
        step = None if progress is None else (lambda s, n, x, x0: progress(0, 1, s, n, x, x0))
        layout = regions.for_vcu(vcus[0]) if regions is not None else None
        try:
            latent = sample_latent(model, contexts, positive, negative, streams, settings, step, device, layout,
                                   layers, space=space, init_latent=init)
        except SamplingInterrupted:
            return LongVideo(torch.zeros(3, 0, *vcus[0].size), 0, 1)
        video = decode(latent, lambda z: vae.decode(z, tiling=tiling), refs)
    if composite_feather is not None:
        video = composite(video, vcus[0], composite_feather)
    if on_frames is not None:
        on_frames(video)
    return LongVideo(video, 1, 1, None if settings.step_cache is None else settings.step_cache.stats)
