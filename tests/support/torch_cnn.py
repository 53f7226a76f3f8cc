"""A tiny torch image classifier with LoRA-able convolutions, its fixed images, the LoRA config
on them and a few training steps: what the Conv2d LoRA tests on torch and on Paddle share."""

from __future__ import annotations

TARGETS = ["stem", "mix", "down"]


def tiny_cnn(torch):
    """A small image classifier: 3x3, 1x1 and strided 3x3 convolutions, then a linear head."""
    nn = torch.nn

    class TinyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.mix = nn.Conv2d(8, 8, 1)
            self.down = nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=False)
            self.grouped = nn.Conv2d(6, 6, 3, padding=1, groups=2)
            self.head = nn.Linear(6, 5)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = torch.relu(self.mix(x))
            x = self.grouped(torch.relu(self.down(x)))
            return self.head(x.mean(dim=(2, 3)))

    torch.manual_seed(0)
    return TinyCNN().eval()


def images(torch):
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def config(library, **fields):
    return library.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, **fields)


def train(torch, model, steps: int = 3) -> None:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(steps):
        model(images(torch)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
