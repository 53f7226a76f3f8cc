"""PaddleNLP's ``print_trainable_parameters`` line, for ``peftplug.paddlenlp``'s models on any framework."""


def trainable_line(frozen: int, trainable: int) -> str:
    """Frozen, trainable and total counts and the trainable share, as PaddleNLP 2.8 formats them."""
    total = frozen + trainable
    return (
        f"Frozen parameters: {frozen:.2e} || Trainable parameters:{trainable:.2e} || Total parameters:{total:.2e}"
        f"|| Trainable:{trainable / total:.2%}"
    )
