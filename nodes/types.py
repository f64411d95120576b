"""The pack's own socket types (everything else uses ComfyUI's native IMAGE, MASK, LATENT, CONDITIONING)."""

from comfy_api.latest import io

VaceModel = io.Custom("VACE_MODEL")  # a ModelPatcher around vace_core's VaceTransformer
VaceVAE = io.Custom("VACE_VAE")  # a ModelPatcher around vace_core's WanVAE
RegionsType = io.Custom("VACE_REGIONS")  # vace_core.regional.Regions: composed text, region masks, knobs
VCU = io.Custom("VACE_VCU")  # vace_core.vcu.VCU: frames, masks, references (pixels; encoded by the sampler)

CATEGORY = "VACE"
