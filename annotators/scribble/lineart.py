"""The informative-drawings generator (Chan et al. 2022), a ResNet-style image-to-image network.

Module names match the published checkpoints (model0..model4), so netG_A_latest.pth loads unchanged.
"""

from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x):
        return x + self.conv_block(x)


def down(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.InstanceNorm2d(cout), nn.ReLU(inplace=True)]


def up(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
        nn.InstanceNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class LineartGenerator(nn.Module):
    def __init__(
        self, in_channels: int = 3, out_channels: int = 1, n_residual_blocks: int = 3, width: int = 64
    ):
        super().__init__()
        self.model0 = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, width, 7),
            nn.InstanceNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.model1 = nn.Sequential(*down(width, width * 2), *down(width * 2, width * 4))
        self.model2 = nn.Sequential(*[ResidualBlock(width * 4) for _ in range(n_residual_blocks)])
        self.model3 = nn.Sequential(*up(width * 4, width * 2), *up(width * 2, width))
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Sigmoid())

    def forward(self, x):  # (B, 3, H, W) in 0..1 -> (B, 1, H, W) in 0..1
        # the two stride-2 stages need H and W divisible by 4; pad by reflection and crop back
        h, w = x.shape[-2:]
        ph, pw = -h % 4, -w % 4
        if ph or pw:
            x = nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
        y = self.model4(self.model3(self.model2(self.model1(self.model0(x)))))
        return y[..., :h, :w]
