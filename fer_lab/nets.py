"""The convolutional networks of the ``cnn`` family: plain ``nn.Module``s, no training logic.

Every network maps ``(B, 1, 48, 48)`` float images to ``(B, n_classes)`` logits (and, unless
its class sets ``fixed_input``, images of other sizes too, thanks to global pooling) and is
built by name from ``ARCHITECTURES`` with three knobs: ``width`` (channels of the first stage;
later stages double it), ``dropout`` (before the classifier) and ``n_classes`` (FER2013's 7
by default; a label set such as FER+ has 8). Depthwise convolutions are
avoided on purpose: they crashed torch in fp32 + channels_last on this project's CPUs.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

N_CLASSES = 7  # FER2013's classes: the default head
SIDE = 48


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 'same' convolution, batch norm, ReLU; the conv has no bias since BN adds one."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def pooled_head(c_in: int, dropout: float, n_classes: int) -> nn.Sequential:
    """Global average pooling, dropout, then the linear classifier over ``c_in`` channels."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(c_in, n_classes))


class SeedCNN(nn.Sequential):
    """The seed team's Keras network, layer for layer ('valid' padding, no batch norm).

    Conv(32) -> Conv(64) -> MaxPool -> Conv(128) -> MaxPool -> Flatten -> Dense(128) ->
    Dense(7): 1,732,103 parameters at ``width=32`` with FER2013's 7 classes. ``width``
    scales every layer; the dropout layers have no parameters, so the count holds for any
    ``dropout``.
    Its dense layer fixes the input at 48x48 (``fixed_input``): it cannot train on
    smaller resamplings.
    """

    fixed_input = True

    def __init__(self, width: int = 32, dropout: float = 0.0, n_classes: int = N_CLASSES):
        w = width
        side = ((SIDE - 4) // 2 - 2) // 2  # two valid convs, pool, valid conv, pool: 10
        super().__init__(
            nn.Conv2d(1, w, 3), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(4 * w * side * side, 4 * w), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4 * w, n_classes),
        )


class VGG(nn.Module):
    """VGG-style: four stages of two conv-BN-ReLU and a 2x2 max pool (48 -> 3 px), widths
    w, 2w, 4w, 8w, then global average pooling, dropout and a linear classifier.
    About 1.17M parameters at ``width=32``."""

    def __init__(self, width: int = 32, dropout: float = 0.3, n_classes: int = N_CLASSES):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in (width, 2 * width, 4 * width, 8 * width):
            layers += [conv_bn_relu(c_in, c_out), conv_bn_relu(c_out, c_out), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = pooled_head(c_in, dropout, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv-BN with an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(c_in, c_out, stride),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet: a 3x3 stem, then one basic block per stage at widths w, 2w, 4w, 8w
    (strides 1, 2, 2, 2: 48 -> 6 px), global average pooling, dropout, linear.
    About 1.22M parameters at ``width=32``; as deep as the VGG but with shortcuts."""

    def __init__(self, width: int = 32, dropout: float = 0.3, n_classes: int = N_CLASSES):
        super().__init__()
        stages: list[nn.Module] = [conv_bn_relu(1, width)]
        c_in = width
        for c_out, stride in ((width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)):
            stages.append(BasicBlock(c_in, c_out, stride))
            c_in = c_out
        self.features = nn.Sequential(*stages)
        self.head = pooled_head(c_in, dropout, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "seed_cnn": SeedCNN,
    "vgg": VGG,
    "resnet": ResNet,
}


def build(name: str, width: int = 32, dropout: float = 0.3,
          n_classes: int = N_CLASSES) -> nn.Module:
    """A new network of architecture ``name`` with ``n_classes`` outputs; fails loudly on
    an unknown name."""
    try:
        make = ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(ARCHITECTURES)
        raise KeyError(f"unknown architecture {name!r}; known: {known}") from None
    return make(width=width, dropout=dropout, n_classes=n_classes)


def n_outputs(net: nn.Module) -> int:
    """The number of classes a network scores: its last linear layer's outputs."""
    return [m for m in net.modules() if isinstance(m, nn.Linear)][-1].out_features


def count_parameters(net: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
