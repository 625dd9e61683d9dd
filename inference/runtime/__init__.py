"""Pure-library LLM runtime (no Django): GGUF tensor sources, tokenizer, llama decoder, sampling.

    from inference.runtime import GGUFFile, GGUFTokenizer, Llama, SamplingParams, generate
    gguf = GGUFFile(path)
    model, tok = Llama.from_gguf(gguf), GGUFTokenizer(gguf.metadata)
    for step in generate(model, tok, tok.encode(tok.render_chat(messages)), SamplingParams(max_tokens=64)):
        print(step.text, end="")
"""
from .carriers import default_home, fetch_carrier, find_file
from .generate import Step, generate
from .gguf_reader import DictTensorSource, GGUFFile, Tensor, TensorSource
from .llama import ForwardResult, KVCache, Llama, LlamaConfig
from .sampling import Sampler, SamplingParams, find_stop
from .tokenizer import GGUFTokenizer

__all__ = [
    "DictTensorSource", "ForwardResult", "GGUFFile", "GGUFTokenizer", "KVCache", "Llama", "LlamaConfig",
    "Sampler", "SamplingParams", "Step", "Tensor", "TensorSource", "default_home", "fetch_carrier",
    "find_file", "find_stop", "generate",
]
