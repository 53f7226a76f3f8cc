"""A byte-level tokenizer: every UTF-8 byte is a token, plus pad, bos and eos.

It needs no vocabulary file and no download, which makes it the tokenizer of the built-in
training job (``peftplug train``). Pure Python: importing it imports no framework.
"""

from __future__ import annotations

from collections.abc import Iterable

BYTE_VOCAB = 256


class ByteTokenizer:
    """Token ids ``0..255`` are the bytes of the UTF-8 text; ``256``, ``257``, ``258`` are
    pad, bos and eos. :meth:`decode` inverts :meth:`encode` for any text."""

    pad_token_id: int = BYTE_VOCAB
    bos_token_id: int = BYTE_VOCAB + 1
    eos_token_id: int = BYTE_VOCAB + 2
    vocab_size: int = BYTE_VOCAB + 3

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """The token ids of ``text``: its UTF-8 bytes, optionally framed by bos and eos."""
        ids = list(text.encode("utf-8"))
        if add_bos:
            ids.insert(0, self.bos_token_id)
        if add_eos:
            ids.append(self.eos_token_id)
        return ids

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = True) -> str:
        """The text of ``ids``. Special tokens are dropped (or shown as ``<pad>``, ``<s>``,
        ``</s>`` with ``skip_special_tokens=False``); bytes that are not valid UTF-8 become
        U+FFFD. Raises ValueError for an id outside the vocabulary."""
        names = {self.pad_token_id: "<pad>", self.bos_token_id: "<s>", self.eos_token_id: "</s>"}
        pieces: list[str] = []
        run = bytearray()
        for token in ids:
            token = int(token)
            if 0 <= token < BYTE_VOCAB:
                run.append(token)
                continue
            if token not in names:
                raise ValueError(f"token id {token} is outside the byte vocabulary (0..{self.vocab_size - 1})")
            if not skip_special_tokens:
                pieces.append(run.decode("utf-8", errors="replace"))
                run.clear()
                pieces.append(names[token])
        pieces.append(run.decode("utf-8", errors="replace"))
        return "".join(pieces)

    def __len__(self) -> int:
        return self.vocab_size
