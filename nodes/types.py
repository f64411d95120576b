"""The pack's own socket types (everything else uses ComfyUI's native IMAGE, MASK, LATENT, CONDITIONING)."""

from comfy_api.latest import io

VaceModel = io.Custom("VACE_MODEL")  # a ModelPatcher around vace_core's VaceTransformer
VaceVAE = io.Custom("VACE_VAE")  # a ModelPatcher around vace_core's WanVAE
RegionsType = io.Custom("VACE_REGIONS")  # vace_core.regional.Regions: composed text, region masks, knobs
VCU = io.Custom("VACE_VCU")  # vace_core.vcu.VCU: frames, masks, references (pixels; encoded by the sampler)

CATEGORY = "VACE"
StepCache = io.Custom("VACE_STEP_CACHE")  # vace_core.step_cache.TeaCache settings (the sampler copies it per run)
LowNoiseExpert = io.Custom("VACE_LOW_NOISE_EXPERT")  # nodes.experts.LowNoiseExpert: Wan2.2's second expert
Guidance = io.Custom("VACE_GUIDANCE")  # vace_core.guidance_options.GuidanceOptions (NAG, SLG, CFG-Zero*, APG)
TimelineType = io.Custom("VACE_TIMELINE")  # vace_core.timeline.Timeline: per-window prompts, references, end frames
