"""GPT-2 byte-level BPE tokenizer rebuilt from GGUF metadata, and chat-template rendering.

The vocabulary, merges, token types and special ids come from `tokenizer.ggml.*`; the pre-tokenizer
follows llama.cpp's choice for `tokenizer.ggml.pre` (for 'smollm': digits split one by one, then the
GPT-2 regex). Control tokens (type 3) and user-defined tokens (type 4) are matched whole in text.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["GGUFTokenizer", "byte_decoder"]

_CONTROL, _USER_DEFINED = 3, 4
_DIGITS_FIRST = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}


@functools.cache
def byte_decoder() -> dict[str, int]:
    """GPT-2's printable-unicode stand-in for each byte, inverted: char -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class GGUFTokenizer:
    """encode/decode with a `tokenizers.Tokenizer` built from GGUF metadata; chat templates via Jinja."""

    def __init__(self, metadata: Mapping[str, Any]):
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

        model = metadata.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ValueError(f"only GPT-2 byte-level BPE is supported, got tokenizer.ggml.model={model!r}")
        tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
        types = list(metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens))
        merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
        self.tokens = tokens
        self.bos_id = _opt_int(metadata.get("tokenizer.ggml.bos_token_id"))
        self.eos_id = _opt_int(metadata.get("tokenizer.ggml.eos_token_id"))
        self.add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", False))
        self.chat_template: str | None = metadata.get("tokenizer.chat_template")
        self.special_ids = frozenset(i for i, t in enumerate(types) if t == _CONTROL)

        tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if metadata.get("tokenizer.ggml.pre", "default") in _DIGITS_FIRST:
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"), byte_level])
        else:
            tok.pre_tokenizer = byte_level
        tok.decoder = decoders.ByteLevel()
        added = [AddedToken(tokens[i], special=types[i] == _CONTROL, normalized=False)
                 for i in range(len(tokens)) if types[i] in (_CONTROL, _USER_DEFINED)]
        tok.add_tokens(added)
        self._tok = tok
        self._bytes = byte_decoder()

    def to_json(self) -> str:
        """The rebuilt tokenizer as `tokenizers` JSON (what the model's tokenizer atom stores)."""
        return self._tok.to_str()

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, *, add_bos: bool | None = None, special: bool = True) -> list[int]:
        """Token ids for `text`; special=True lets '<|im_start|>' etc. in the text become their ids."""
        if not isinstance(text, str):
            raise TypeError("text must be str")
        if special:
            ids = self._tok.encode(text, add_special_tokens=False).ids
        else:
            ids = self._encode_plain(text)
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def _encode_plain(self, text: str) -> list[int]:
        # control-token names in the text stay plain text (no injection of <|im_start|> from user input)
        self._tok.encode_special_tokens = True
        try:
            return self._tok.encode(text, add_special_tokens=False).ids
        finally:
            self._tok.encode_special_tokens = False

    def decode(self, ids: Sequence[int], *, skip_special: bool = False) -> str:
        return self.token_bytes(ids, skip_special=skip_special).decode("utf-8", errors="replace")

    def token_bytes(self, ids: Sequence[int], *, skip_special: bool = False) -> bytes:
        """Raw bytes of tokens (for streaming: a token can end inside a UTF-8 character)."""
        out = bytearray()
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"token id {i} out of range")
            if i in self.special_ids:
                if not skip_special:
                    out += self.tokens[i].encode()
                continue
            t = self.tokens[i]
            out += bytes(self._bytes[c] for c in t) if all(c in self._bytes for c in t) else t.encode()
        return bytes(out)

    def render_chat(self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True) -> str:
        """The prompt text the model's own Jinja chat template makes for `messages`."""
        if not self.chat_template:
            raise ValueError("the model has no chat template")
        for m in messages:
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError("messages must be {'role': str, 'content': str} mappings")
        return _compile(self.chat_template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt,
            bos_token=self.tokens[self.bos_id] if self.bos_id is not None else "",
            eos_token=self.tokens[self.eos_id] if self.eos_id is not None else "",
        )


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


@functools.lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template)
