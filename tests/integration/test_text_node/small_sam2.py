"""The test server's SAM2 runs the released hiera-tiny config at IMAGE_SIZE instead of 1024 (sam2 resizes every
frame to the model's square input): a size cut for CPU speed, the architecture, the checkpoint layout and the pack's
code path unchanged. The test checkpoint is written at the same size (tests/integration/fixtures.py)."""

IMAGE_SIZE = 128
OVERRIDES = [f"++model.image_size={IMAGE_SIZE}"]


def install() -> None:
    """Adds OVERRIDES to every build_sam2_video_predictor call in this process (the pack calls it through the
    module, annotators/masks/sam2.py); nothing to do when sam2 is not installed."""
    try:
        import sam2.build_sam as build_sam
    except ImportError:
        return
    build = build_sam.build_sam2_video_predictor

    def small(*args, hydra_overrides_extra=(), **kwargs):
        return build(*args, hydra_overrides_extra=[*hydra_overrides_extra, *OVERRIDES], **kwargs)

    build_sam.build_sam2_video_predictor = small
