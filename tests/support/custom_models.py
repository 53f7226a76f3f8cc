"""The four tiny custom torch models of HF PEFT's custom-model tests, shaped as theirs are (an MLP, a
GPT-2 ``Conv1D`` model, an ``Embedding`` model, a ``Conv2d`` model), their inputs, and the
adapter cases the model-API matrix runs on them."""

from __future__ import annotations

# (case id, model, config class name, config fields): LoRA, DoRA, IA3 and modules_to_save.
CASES = [
    ("mlp-lora", "mlp", "LoraConfig", {"target_modules": ["lin0"]}),
    ("mlp-lora-both", "mlp", "LoraConfig", {"target_modules": ["lin0", "lin1"]}),
    ("mlp-lora-modules_to_save", "mlp", "LoraConfig", {"target_modules": ["lin0"], "modules_to_save": ["lin1"]}),
    ("mlp-dora", "mlp", "LoraConfig", {"target_modules": ["lin0"], "use_dora": True}),
    ("mlp-ia3", "mlp", "IA3Config", {"target_modules": ["lin0"], "feedforward_modules": []}),
    ("mlp-ia3-feedforward", "mlp", "IA3Config", {"target_modules": ["lin0", "lin1"], "feedforward_modules": ["lin0"]}),
    (
        "mlp-ia3-modules_to_save",
        "mlp",
        "IA3Config",
        {"target_modules": ["lin0"], "feedforward_modules": [], "modules_to_save": ["lin1"]},
    ),
    ("conv1d-lora", "conv1d", "LoraConfig", {"target_modules": ["conv1d"]}),
    ("conv1d-dora", "conv1d", "LoraConfig", {"target_modules": ["conv1d"], "use_dora": True}),
    ("conv1d-ia3", "conv1d", "IA3Config", {"target_modules": ["conv1d"], "feedforward_modules": []}),
    ("emb-lora", "emb", "LoraConfig", {"target_modules": ["emb"]}),
    ("emb-lora-modules_to_save", "emb", "LoraConfig", {"target_modules": ["emb"], "modules_to_save": ["lin0"]}),
    ("conv2d-lora", "conv2d", "LoraConfig", {"target_modules": ["conv2d"]}),
    ("conv2d-ia3", "conv2d", "IA3Config", {"target_modules": ["conv2d"], "feedforward_modules": []}),
    (
        "conv2d-ia3-feedforward",
        "conv2d",
        "IA3Config",
        {"target_modules": ["conv2d"], "feedforward_modules": ["conv2d"]},
    ),
    (
        "conv2d-lora-modules_to_save",
        "conv2d",
        "LoraConfig",
        {"target_modules": ["conv2d"], "modules_to_save": ["lin0"]},
    ),
]

# Cases HF PEFT runs that peftplug does not: why each is left out.
NOT_SUPPORTED = {
    "emb-dora": "peftplug's DoRA wraps Linear and Conv1D layers only (Embedding DoRA is refused with an error)",
    "conv2d-dora": "peftplug's DoRA wraps Linear and Conv1D layers only (Conv2d DoRA is refused with an error)",
}


def build(torch, kind: str):
    """A fresh model of ``kind`` (mlp, conv1d, emb, conv2d), the same weights every call, in eval mode."""
    from transformers.pytorch_utils import Conv1D

    nn = torch.nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin0 = nn.Linear(10, 20)
            self.lin1 = nn.Linear(20, 2)

        def forward(self, x):
            return self.lin1(torch.relu(self.lin0(x)))

    class ModelConv1D(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1d = Conv1D(20, 10)  # GPT-2's: 20 outputs from 10 inputs, weight [10, 20]
            self.lin0 = nn.Linear(20, 2)

        def forward(self, x):
            return self.lin0(torch.relu(self.conv1d(x)))

    class ModelEmb(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(100, 5)
            self.lin0 = nn.Linear(50, 2)

        def forward(self, x):
            return self.lin0(self.emb(x).flatten(1))

    class ModelConv2D(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv2d = nn.Conv2d(5, 10, 3)
            self.lin0 = nn.Linear(10, 2)

        def forward(self, x):
            return self.lin0(torch.relu(self.conv2d(x)).flatten(1))

    classes = {"mlp": MLP, "conv1d": ModelConv1D, "emb": ModelEmb, "conv2d": ModelConv2D}
    torch.manual_seed(0)
    return classes[kind]().eval()


def inputs(torch, kind: str):
    """A fixed batch of inputs for a model of ``kind``."""
    generator = torch.Generator().manual_seed(1)
    if kind == "emb":
        return torch.randint(0, 100, (4, 10), generator=generator)
    if kind == "conv2d":
        return torch.randn(4, 5, 3, 3, generator=generator)
    return torch.randn(4, 10, generator=generator)


def randomise(torch, model, seed: int = 2) -> None:
    """Move every trainable parameter away from its identity initialisation (a trained adapter)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)


def paddle_mlp(paddle, torch):
    """The custom MLP in Paddle, carrying ``build(torch, "mlp")``'s weights (transposed to [in, out])."""
    nn = paddle.nn

    class MLP(nn.Layer):
        def __init__(self):
            super().__init__()
            self.lin0 = nn.Linear(10, 20)
            self.lin1 = nn.Linear(20, 2)

        def forward(self, x):
            return self.lin1(nn.functional.relu(self.lin0(x)))

    source = build(torch, "mlp").state_dict()
    model = MLP()
    for name, parameter in model.named_parameters():
        value = source[name].numpy()
        parameter.set_value(value.T if name.endswith("weight") else value)
    model.eval()
    return model
