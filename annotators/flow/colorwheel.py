"""Flow drawn as colour with the Middlebury colour wheel (Baker et al. 2011), as RAFT's flow_viz draws it:
hue is the direction, saturation the speed relative to the frame's fastest pixel, zero motion is white."""

import torch

# hue segments: red-yellow, yellow-green, green-cyan, cyan-blue, blue-magenta, magenta-red
SEGMENTS = (15, 6, 4, 11, 13, 6)


def color_wheel() -> torch.Tensor:
    """(55, 3) RGB in 0..255: each segment ramps one channel up or down between two primaries."""
    ry, yg, gc, cb, bm, mr = (torch.arange(n, dtype=torch.float32) for n in SEGMENTS)
    ramp = lambda i, n: torch.floor(255 * i / n)  # noqa: E731
    full, zero = (lambda i: torch.full_like(i, 255.0)), torch.zeros_like
    rows = [
        torch.stack([full(ry), ramp(ry, 15), zero(ry)], 1),
        torch.stack([255 - ramp(yg, 6), full(yg), zero(yg)], 1),
        torch.stack([zero(gc), full(gc), ramp(gc, 4)], 1),
        torch.stack([zero(cb), 255 - ramp(cb, 11), full(cb)], 1),
        torch.stack([ramp(bm, 13), zero(bm), full(bm)], 1),
        torch.stack([full(mr), zero(mr), 255 - ramp(mr, 6)], 1),
    ]
    return torch.cat(rows)


def flow_to_color(flows: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 2) flow (x, y) in pixels -> (T, H, W, 3) RGB in 0..1, each frame normalised by its own
    largest motion."""
    flows = flows.float()
    u, v = flows[..., 0], flows[..., 1]
    radius = torch.sqrt(u**2 + v**2)
    scale = radius.flatten(1).amax(1)[:, None, None] + 1e-5  # per frame
    u, v, radius = u / scale, v / scale, radius / scale
    wheel = color_wheel().to(flows.device)
    n = wheel.shape[0]
    position = (torch.atan2(-v, -u) / torch.pi + 1) / 2 * (n - 1)  # angle -> position on the wheel
    k0 = position.floor().long()
    k1 = torch.where(k0 + 1 == n, 0, k0 + 1)
    f = (position - k0)[..., None]
    color = ((1 - f) * wheel[k0] + f * wheel[k1]) / 255  # (T, H, W, 3)
    inside = (radius <= 1)[..., None]
    color = torch.where(inside, 1 - radius[..., None] * (1 - color), color * 0.75)
    return torch.floor(255 * color).float() / 255
