#!/usr/bin/env python3
"""Golden fixtures for the `lowrank` decoders (Llama, Qwen2, GPT-2), produced with PyTorch + transformers + PEFT.

Run from the repository root (CPU only, about a minute on 2 cores):

    python3 -m venv .venv-golden
    .venv-golden/bin/pip install -r scripts/golden/requirements.txt
    .venv-golden/bin/python scripts/golden/make_decoder_golden.py

It (re)writes, under tests/fixtures/golden/ (the encoder fixtures of make_golden.py are left alone):

* ``tiny-llama/``, ``tiny-qwen2/``, ``tiny-gpt2/``: three tiny randomly initialised *ForCausalLM models
  exactly as ``save_pretrained`` writes them (``config.json``, ``generation_config.json``,
  ``model.safetensors``, all tensors F32, keys = the *ForCausalLM state_dict minus tied aliases):

  - tiny-llama: LlamaForCausalLM, hidden 32, 2 layers, 4 heads, 2 KV heads (GQA, 2 query heads per KV head),
    head_dim 8, intermediate 48 (SwiGLU: down(silu(gate(x)) * up(x))), vocab 97, RMSNorm eps 1e-5, rope_theta
    10000 with llama3 rope scaling (factor 8, low_freq_factor 1, high_freq_factor 4,
    original_max_position_embeddings 16), no biases, untied ``lm_head.weight`` [97, 32].
  - tiny-qwen2: Qwen2ForCausalLM, same sizes, RMSNorm eps 1e-6, default rope (theta 10000), biases on
    q_proj/k_proj/v_proj only, tied embeddings (no ``lm_head.weight`` in the file: logits = h @ embed^T).
  - tiny-gpt2: GPT2LMHeadModel, n_embd 32, 2 layers, 4 heads, n_positions 64, n_inner 128, gelu_new
    (tanh approximation), LayerNorm eps 1e-5, learned position embeddings ``wpe``, Conv1D layers whose weights
    are stored ``[in, out]`` (y = x @ W + b), fused ``attn.c_attn`` [32, 96] = (q | k | v) along the output axis,
    tied ``lm_head`` (no ``lm_head.weight`` in the file).

  transformers' own init (initializer_range 0.2; the default 0.02 makes every tensor and gradient of a 32-wide
  model too small to catch bugs, see make_golden.py), then every norm weight is re-drawn as 1 + 0.1 N(0, 1),
  every norm bias and every Linear/Conv1D bias as 0.1 N(0, 1), so that bugs in them show. The embedding row of
  the pad id (0) of Llama/Qwen2 stays zero (transformers zeroes ``nn.Embedding(padding_idx=pad)``'s row).
  pad_token_id 0, bos 1, eos 2; every dropout probability is 0.

  config.json is transformers 5's: rope settings live in ``rope_parameters`` ({rope_type, rope_theta, and for
  llama3 factor, low_freq_factor, high_freq_factor, original_max_position_embeddings}; there is no top-level
  ``rope_theta``/``rope_scaling``); Qwen2's has no ``head_dim`` (= hidden_size / num_attention_heads).

* ``<case>.safetensors`` + ``<case>.json`` for each case in ``CASES`` (forward in eval mode, then
  ``loss.backward()``).

Shared input batch: 4 sequences of lengths [9, 5, 12, 3], right-padded to 12 with the pad id 0; real tokens
are drawn uniformly from 3..96 (never the pad id, nor bos/eos) with ``torch.Generator().manual_seed(4321)``.
Every position of a sequence is 0..T-1 (right padding: position_ids = arange).

Keys of ``<case>.safetensors``:

* ``input_ids`` i64 [4, 12], ``attention_mask`` i64 [4, 12] (1 on real tokens).
* ``labels`` i64: cls cases [4] (classes [1, 2, 0, 1], num_labels 3); lm cases [4, 12] = input_ids with -100 on
  the padding and on the first 2 real tokens of each sequence (a masked "prompt"). They are passed to the model
  as ``labels=``; transformers shifts them itself: position t's logits predict ``labels[:, t + 1]``, and the loss
  is the mean cross-entropy over every non-ignored target of the whole batch (here 7 + 3 + 10 + 1 = 21 targets).
* ``logits`` f32: cls [4, 3] (the score logits of each sequence's last real token); lm [4, 12, 97] (every
  position, padded ones included: those are what transformers computes, a pad query attending to every real key
  before it; a test may compare real positions only).
* ``loss`` f32 [1].
* cls cases: ``param.score.weight`` f32 [3, hidden]: the fresh classification head (``score`` is
  ``nn.Linear(hidden, 3, bias=False)``, not in the model folder), drawn as N(0, 0.2^2) with
  ``torch.Generator().manual_seed(<case seed>)``; load it before running the case.
* LoRA cases: ``lora.<module path>.A`` f32 [in, r] and ``lora.<module path>.B`` f32 [r, out], the engine's layout,
  with ``y = base(x) + scale * (x @ A) @ B`` (PEFT's ``lora_A.weight [r, in]`` / ``lora_B.weight [out, r]``
  transposed into it; for GPT-2's Conv1D modules too: PEFT's LoRA factors of a Conv1D are ordinary nn.Linear and
  ``fan_in_fan_out`` only matters when merging). A is PEFT's default (kaiming-uniform, under
  ``torch.manual_seed(<case seed>)``), B is overwritten with N(0, 0.2^2) (seed + 1) so that gradients are
  non-trivial.
* ``grad.<module path>.A`` / ``.B``: gradients of the LoRA tensors (same layout).
* ``grad.<state_dict key>``: gradient of every trainable base parameter, in PyTorch's state_dict layout and shape
  (GPT-2 Conv1D weights stay [in, out]); for a tied model the embedding key (``model.embed_tokens.weight`` /
  ``transformer.wte.weight``) holds the sum of the lookup and the lm_head contributions and there is no
  ``grad.lm_head.weight``. For Llama/Qwen2 the lookup part of the pad id's row is zero (padding_idx = 0), so an
  untied ``grad.model.embed_tokens.weight[0]`` is exactly 0. ``grad.score.weight`` in cls cases whose head trains.

``<module path>`` is the module's name in the non-PEFT model of the case (``*ForSequenceClassification`` for cls,
``*ForCausalLM`` for lm):

* llama / qwen2: ``model.layers.{i}.self_attn.{q_proj,k_proj,v_proj,o_proj}``,
  ``model.layers.{i}.mlp.{gate_proj,up_proj,down_proj}``, ``score``, ``lm_head``.
* gpt2: ``transformer.h.{i}.attn.c_attn`` (in 32, out 96), ``transformer.h.{i}.attn.c_proj``,
  ``transformer.h.{i}.mlp.c_fc`` (32 -> 128), ``transformer.h.{i}.mlp.c_proj`` (128 -> 32), ``score``.

Keys of ``<case>.json``: ``model`` (folder under tests/fixtures/golden), ``arch`` (llama | qwen2 | gpt2), ``class``
(the transformers class run), ``task`` (cls | lm), ``mode`` (lora | last-layers | full), ``num_labels`` (cls),
``lora`` (null, or {convention "peft", r, alpha, scale = alpha / r, modules: the exact module paths that got
LoRA, peft_target_modules: PEFT's target_modules, fan_in_fan_out, task_type}), ``modules_to_save`` (what PEFT
trained in full next to LoRA: ["score"] for SEQ_CLS, [] otherwise), ``trainable`` (sorted list of the ``grad.*``
keys), ``seed``, ``description``.

What transformers computes (and ``functional_logits`` below re-implements from the files):

* Llama / Qwen2 layer: ``h += o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1)))`` with
  ``n1 = input_layernorm(h)``, then ``h += down_proj(silu(gate_proj(n2)) * up_proj(n2))`` with
  ``n2 = post_attention_layernorm(h)``; final ``model.norm``; RMSNorm(x) = w * x / sqrt(mean(x^2) + eps).
  Rope on q and k per head, rotate_half layout: ``x * cos + cat(-x[d/2:], x[:d/2]) * sin`` with
  cos/sin of ``pos * inv_freq`` repeated twice along head_dim (see rope-inv-freq.json). GQA: query head j uses KV
  head j // (num_heads / num_kv_heads). Scores ``q.k / sqrt(head_dim)``.
* GPT-2 block: ``h += c_proj(attn(split(c_attn(ln_1(h)))))``, ``h += mlp.c_proj(gelu_new(c_fc(ln_2(h))))``,
  final ``ln_f``; input ``wte[ids] + wpe[pos]``; gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
* Attention mask: causal and key padding (key j is visible to query i iff j <= i and attention_mask[j] = 1);
  padded query rows therefore see every real key (their outputs matter for nothing but the stored lm logits).
* cls: transformers scores every position and keeps, per sequence, the RIGHTMOST position whose input id is not
  ``pad_token_id`` (``argmax(arange(T) * (ids != pad))``; attention_mask is not consulted). With right padding and
  no pad id among the real tokens (true here) that is position length - 1. Loss: mean cross-entropy over the 4.
* lm logits = ``lm_head(h)`` (Llama) or ``h @ embed^T`` (tied Qwen2 / GPT-2); loss as for ``labels`` above.

Also ``rope-inv-freq.json``: the inverse frequencies ``inv_freq`` [head_dim / 2] (float32 values) that
transformers' ``ROPE_INIT_FUNCTIONS`` computes for a few rope configurations (the tiny models', SmolLM2's and
two real llama3-scaled ones whose frequencies cross all three branches of the llama3 formula: kept, smoothed and
divided by factor), each with the ``rope_parameters`` and head_dim that produced it, and for llama3 entries
``branches``: how many frequencies fall in each branch ({kept, smoothed, divided}; the tiny model has no kept
one, its smallest wavelength 2*pi being above original_max_position_embeddings / high_freq_factor = 4).

Everything is float32 and deterministic (fixed seeds, CPU, one thread, eager attention). After writing, every
case is re-computed by an independent functional forward (``verify_case``, driven only by the files on disk and
the conventions above) and autograd, and must agree to 1e-4 relative.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import transformers
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
)
from transformers.activations import NewGELUActivation
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.pytorch_utils import Conv1D

import peft
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "golden"
DIRS = {"llama": OUT / "tiny-llama", "qwen2": OUT / "tiny-qwen2", "gpt2": OUT / "tiny-gpt2"}

BATCH, SEQ = 4, 12
LENGTHS = [9, 5, 12, 3]
VOCAB = 97
PAD = 0
FIRST_REAL_TOKEN = 3  # real tokens are drawn from 3..96
PROMPT_TOKENS = 2  # lm cases: the first 2 real tokens of every sequence are not targets
CLS_LABELS = [1, 2, 0, 1]  # num_labels = 3
NUM_LABELS = 3
INIT_STD = 0.2  # see make_golden.py: gain-1 Linears for a 32-wide model, O(0.01..1) gradients
LORA_B_STD = 0.2

CLS_CLASSES = {"llama": LlamaForSequenceClassification, "qwen2": Qwen2ForSequenceClassification,
               "gpt2": GPT2ForSequenceClassification}
LM_CLASSES = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM, "gpt2": GPT2LMHeadModel}

torch.set_default_dtype(torch.float32)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


# --------------------------------------------------------------------------------------
# Inputs and models
# --------------------------------------------------------------------------------------
def make_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(4321)
    input_ids = torch.full((BATCH, SEQ), PAD, dtype=torch.int64)
    attention_mask = torch.zeros(BATCH, SEQ, dtype=torch.int64)
    for i, n in enumerate(LENGTHS):
        input_ids[i, :n] = torch.randint(FIRST_REAL_TOKEN, VOCAB, (n,), generator=g, dtype=torch.int64)
        attention_mask[i, :n] = 1
    assert (input_ids[attention_mask == 1] != PAD).all()
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def lm_labels(inputs) -> torch.Tensor:
    labels = inputs["input_ids"].clone()
    labels[inputs["attention_mask"] == 0] = -100
    labels[:, :PROMPT_TOKENS] = -100
    return labels


def llama_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
        tie_word_embeddings=False,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
        attention_bias=False,
        attention_dropout=0.0,
        mlp_bias=False,
        hidden_act="silu",
        initializer_range=INIT_STD,
        attn_implementation="eager",
    )


def qwen2_config() -> Qwen2Config:
    return Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
        attention_dropout=0.0,
        use_sliding_window=False,
        hidden_act="silu",
        initializer_range=INIT_STD,
        attn_implementation="eager",
    )


def gpt2_config() -> GPT2Config:
    return GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=INIT_STD,
        attn_implementation="eager",
    )


def randomise_norms_and_biases(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n_norm = n_bias = 0
    with torch.no_grad():
        for _, m in model.named_modules():
            name = type(m).__name__
            if isinstance(m, nn.LayerNorm) or name.endswith("RMSNorm"):
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=g))
                n_norm += 1
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, (nn.Linear, Conv1D)) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                n_bias += 1
    assert n_norm == 5, (type(model).__name__, n_norm)  # 2 per layer + the final norm


def tied_aliases(model: nn.Module) -> set[str]:
    """state_dict keys that alias an earlier key's storage (the tied lm_head)."""
    seen, aliases = {}, set()
    for k, v in model.state_dict(keep_vars=True).items():
        if v.data_ptr() in seen:
            aliases.add(k)
        else:
            seen[v.data_ptr()] = k
    return aliases


def save_model(model: nn.Module, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder)
    on_disk = load_file(folder / "model.safetensors")
    sd = model.state_dict()
    expected = set(sd) - tied_aliases(model)
    assert set(on_disk) == expected, set(on_disk) ^ expected
    for k in expected:
        assert torch.equal(on_disk[k], sd[k]), k
        assert on_disk[k].dtype == torch.float32, k


def build_models() -> None:
    torch.manual_seed(0)
    llama = LlamaForCausalLM(llama_config())
    randomise_norms_and_biases(llama, seed=1)
    assert llama.lm_head.weight.data_ptr() != llama.model.embed_tokens.weight.data_ptr()
    save_model(llama, DIRS["llama"])

    torch.manual_seed(10)
    qwen = Qwen2ForCausalLM(qwen2_config())
    randomise_norms_and_biases(qwen, seed=11)
    assert qwen.lm_head.weight is qwen.model.embed_tokens.weight
    save_model(qwen, DIRS["qwen2"])

    torch.manual_seed(20)
    gpt = GPT2LMHeadModel(gpt2_config())
    randomise_norms_and_biases(gpt, seed=21)
    assert gpt.lm_head.weight is gpt.transformer.wte.weight
    save_model(gpt, DIRS["gpt2"])


def load(arch: str, task: str, score_seed: int | None = None):
    """The case's model, loaded from its folder. For cls, the fresh ``score`` is set from score_seed."""
    folder = DIRS[arch]
    if task == "cls":
        m = CLS_CLASSES[arch].from_pretrained(folder, num_labels=NUM_LABELS, attn_implementation="eager")
        g = torch.Generator().manual_seed(score_seed)
        with torch.no_grad():
            m.score.weight.copy_(INIT_STD * torch.randn(m.score.weight.shape, generator=g))
        assert m.score.bias is None
    else:
        m = LM_CLASSES[arch].from_pretrained(folder, attn_implementation="eager")
    m = m.float().eval()
    assert m.config._attn_implementation == "eager", m.config._attn_implementation
    on_disk = load_file(folder / "model.safetensors")
    sd = m.state_dict()
    for k, v in on_disk.items():
        if task == "cls" and k.startswith("lm_head."):
            continue
        assert torch.equal(sd[k], v), f"{folder.name}: {k} differs after from_pretrained"
    if task == "cls":
        assert set(sd) == {k for k in on_disk if not k.startswith("lm_head.")} | {"score.weight"}, set(sd)
    return m


def check_activations() -> None:
    x = torch.linspace(-6, 6, 2001)
    gelu_new = 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
    gpt = load("gpt2", "lm")
    acts = [m.act for m in gpt.modules() if hasattr(m, "act")]
    assert len(acts) == 2 and all(isinstance(a, NewGELUActivation) for a in acts), acts
    for a in acts:
        assert torch.allclose(a(x), gelu_new, atol=1e-6, rtol=0)
    for arch in ("llama", "qwen2"):
        m = load(arch, "lm")
        for layer in m.model.layers:
            assert torch.allclose(layer.mlp.act_fn(x), x * torch.sigmoid(x), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------------------
def forward_backward(model, inputs: dict, labels: torch.Tensor, task: str):
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels)
    if task == "cls":
        ref = F.cross_entropy(out.logits, labels)
    else:
        ref = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, ref, atol=1e-6), (out.loss, ref)
    out.loss.backward()
    return out.logits.detach().clone(), out.loss.detach().reshape(1).clone()


def check_frozen_and_trainable(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"trainable {name} has no grad"
        else:
            assert p.grad is None, f"frozen {name} has a grad"


def base_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    state_keys = set(model.state_dict())
    out = {}
    for name, p in model.named_parameters():  # tied parameters appear once, under the embedding's name
        if not p.requires_grad:
            continue
        assert name in state_keys, name
        out[f"grad.{name}"] = p.grad.detach().clone().contiguous()
    return out


def peft_layers(peft_model) -> dict[str, LoraLayer]:
    prefix = "base_model.model."
    layers = {}
    for name, m in peft_model.named_modules():
        if isinstance(m, LoraLayer):
            assert name.startswith(prefix), name
            layers[name[len(prefix):]] = m
    return layers


def peft_setup(model, r, alpha, targets, task_type, fan_in_fan_out, b_seed, expected_modules):
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=targets,
        lora_dropout=0.0,
        bias="none",
        fan_in_fan_out=fan_in_fan_out,
        task_type=task_type,
    )
    pm = get_peft_model(model, config)
    layers = peft_layers(pm)
    assert sorted(layers) == sorted(expected_modules), (sorted(layers), sorted(expected_modules))
    scale = alpha / r
    g = torch.Generator().manual_seed(b_seed)
    tensors = {}
    with torch.no_grad():
        for path in expected_modules:
            m = layers[path]
            assert isinstance(m.lora_dropout["default"], nn.Identity)
            assert abs(m.scaling["default"] - scale) < 1e-12, (m.scaling, scale)
            assert m.fan_in_fan_out == isinstance(m.get_base_layer(), Conv1D), path
            wb = m.lora_B["default"].weight  # [out, r]
            wb.copy_(LORA_B_STD * torch.randn(wb.shape, generator=g))
    for path in expected_modules:
        m = layers[path]
        a = m.lora_A["default"].weight.detach().t().contiguous().clone()  # [in, r]
        b = m.lora_B["default"].weight.detach().t().contiguous().clone()  # [r, out]
        base = m.get_base_layer()
        w = base.weight  # nn.Linear [out, in]; Conv1D [in, out]
        n_in, n_out = (w.shape[0], w.shape[1]) if isinstance(base, Conv1D) else (w.shape[1], w.shape[0])
        assert a.shape == (n_in, r) and b.shape == (r, n_out), (path, a.shape, b.shape)
        tensors[f"lora.{path}.A"] = a
        tensors[f"lora.{path}.B"] = b
    return pm, layers, tensors, scale


def peft_grads(pm, layers, modules, base_keys: set[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """LoRA gradients (engine layout) and the full gradients of PEFT's modules_to_save copies."""
    tensors = {}
    for path in modules:
        m = layers[path]
        tensors[f"grad.{path}.A"] = m.lora_A["default"].weight.grad.detach().t().contiguous().clone()
        tensors[f"grad.{path}.B"] = m.lora_B["default"].weight.grad.detach().t().contiguous().clone()
    saved = set()
    prefix = "base_model.model."
    for name, p in pm.named_parameters():
        if not p.requires_grad or "lora_A" in name or "lora_B" in name:
            continue
        assert name.startswith(prefix) and ".modules_to_save.default." in name, name
        key = name[len(prefix):].replace(".modules_to_save.default.", ".")
        assert key in base_keys, key
        tensors[f"grad.{key}"] = p.grad.detach().clone().contiguous()
        saved.add(key.rsplit(".", 1)[0])
    return tensors, sorted(saved)


def layer_paths(arch: str, names: list[str], n_layers: int = 2) -> list[str]:
    if arch == "gpt2":
        sub = {"c_attn": ["attn.c_attn"], "c_proj": ["attn.c_proj", "mlp.c_proj"], "c_fc": ["mlp.c_fc"]}
        return [f"transformer.h.{i}.{s}" for i in range(n_layers) for n in names for s in sub[n]]
    sub = {n: f"self_attn.{n}" for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
    sub.update({n: f"mlp.{n}" for n in ("gate_proj", "up_proj", "down_proj")})
    return [f"model.layers.{i}.{sub[n]}" for i in range(n_layers) for n in names]


ALL_SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def case_lora(arch, task, targets, r, alpha, inputs, labels, seed):
    model = load(arch, task, score_seed=seed + 2 if task == "cls" else None)
    score = {"param.score.weight": model.score.weight.detach().clone()} if task == "cls" else {}
    modules = layer_paths(arch, targets)
    task_type = "SEQ_CLS" if task == "cls" else "CAUSAL_LM"
    fifo = arch == "gpt2"
    torch.manual_seed(seed)  # PEFT's kaiming-uniform init of lora_A
    pm, layers, tensors, scale = peft_setup(model, r, alpha, targets, task_type, fifo, seed + 1, modules)
    tensors.update(score)
    pm.eval()
    logits, loss = forward_backward(pm, inputs, labels, task)
    check_frozen_and_trainable(pm)
    grads, saved = peft_grads(pm, layers, modules, set(model.state_dict()) | {"score.weight"})
    tensors.update(grads)
    assert saved == (["score"] if task == "cls" else []), saved
    lora = {
        "convention": "peft",
        "r": r,
        "alpha": float(alpha),
        "scale": float(scale),
        "modules": modules,
        "peft_target_modules": targets,
        "fan_in_fan_out": fifo,
        "task_type": task_type,
    }
    return tensors, logits, loss, lora, saved


def case_base(arch, task, train_prefixes, inputs, labels, seed):
    """train_prefixes None = everything trains."""
    model = load(arch, task, score_seed=seed + 2 if task == "cls" else None)
    tensors = {"param.score.weight": model.score.weight.detach().clone()} if task == "cls" else {}
    for name, p in model.named_parameters():
        p.requires_grad_(train_prefixes is None or any(name.startswith(pre) for pre in train_prefixes))
    model.eval()
    logits, loss = forward_backward(model, inputs, labels, task)
    check_frozen_and_trainable(model)
    tensors.update(base_grads(model))
    if train_prefixes is None:
        assert len([k for k in tensors if k.startswith("grad.")]) == len(list(model.parameters()))
    return tensors, logits, loss


def write_case(name, meta, tensors, logits, loss, inputs, labels):
    tensors = dict(tensors)
    tensors["logits"] = logits.float().contiguous()
    tensors["loss"] = loss.float().contiguous()
    tensors["input_ids"] = inputs["input_ids"].clone()
    tensors["attention_mask"] = inputs["attention_mask"].clone()
    tensors["labels"] = labels.clone()
    for k, v in tensors.items():
        if k.startswith(("grad.", "lora.", "param.")):
            assert v.dtype == torch.float32, k
            assert torch.isfinite(v).all(), k
        if k.startswith("grad."):
            assert v.abs().max() > 1e-4, f"{name}: {k} is (nearly) all zero"
    meta = dict(meta)
    meta["trainable"] = sorted(k for k in tensors if k.startswith("grad."))
    save_file(tensors, OUT / f"{name}.safetensors", metadata={"case": name})
    with open(OUT / f"{name}.json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------
# name: (arch, task, mode, spec, seed, description)
#   mode "lora": spec = (peft target_modules, r, alpha); "last-layers": spec = trainable state_dict prefixes;
#   "full": spec = None.
LAST_LLAMA = ["score.", "model.layers.1.", "model.norm."]
CASES = {
    "llama-cls-lora": ("llama", "cls", "lora", (ALL_SEVEN, 4, 8), 100,
                       "LlamaForSequenceClassification + PEFT LoraConfig(task_type=SEQ_CLS, r=4, lora_alpha=8, "
                       "target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj], lora_dropout=0): "
                       "scale = 2; PEFT adds `score` to modules_to_save, so score.weight trains in full "
                       "(grad.score.weight); the rest of the base is frozen; lora_B overwritten with N(0,0.2^2)."),
    "llama-cls-last-layers": ("llama", "cls", "last-layers", LAST_LLAMA, 200,
                              "LlamaForSequenceClassification; trainable: score.weight, every parameter of the "
                              "last decoder layer (model.layers.1.*) and the final norm model.norm.weight; the "
                              "rest frozen."),
    "llama-cls-full": ("llama", "cls", "full", None, 300,
                       "LlamaForSequenceClassification; every parameter trains (embed_tokens included; its pad "
                       "row 0 gets no gradient, padding_idx)."),
    "qwen2-cls-lora": ("qwen2", "cls", "lora", (["q_proj", "v_proj"], 4, 8), 400,
                       "Qwen2ForSequenceClassification + PEFT SEQ_CLS LoRA r=4, lora_alpha=8 on q_proj,v_proj "
                       "(both have biases: base bias frozen, LoRA adds no bias); score trains as modules_to_save."),
    "gpt2-cls-lora": ("gpt2", "cls", "lora", (["c_attn", "c_proj", "c_fc"], 4, 8), 500,
                      "GPT2ForSequenceClassification + PEFT SEQ_CLS LoRA r=4, lora_alpha=8, target_modules="
                      "[c_attn,c_proj,c_fc] (fan_in_fan_out=True: Conv1D); 'c_proj' matches attn.c_proj and "
                      "mlp.c_proj; score trains as modules_to_save."),
    "gpt2-cls-full": ("gpt2", "cls", "full", None, 600,
                      "GPT2ForSequenceClassification; every parameter trains (wte, wpe, Conv1D weights [in,out], "
                      "LayerNorms, score). The key slice [32:64] of each grad.transformer.h.*.attn.c_attn.bias is "
                      "float32 round-off (~1e-8): a key bias cannot change softmax(q.k) without RoPE."),
    "llama-lm-lora": ("llama", "lm", "lora", (["q_proj", "v_proj"], 4, 8), 700,
                      "LlamaForCausalLM + PEFT LoraConfig(task_type=CAUSAL_LM, r=4, lora_alpha=8, "
                      "target_modules=[q_proj,v_proj]); everything else frozen (lm_head too)."),
    "llama-lm-full": ("llama", "lm", "full", None, 800,
                      "LlamaForCausalLM; every parameter trains (untied lm_head.weight and embed_tokens separately; "
                      "embed_tokens row 0 (pad) gets exactly 0)."),
    "qwen2-lm-lora": ("qwen2", "lm", "lora", (ALL_SEVEN, 4, 8), 900,
                      "Qwen2ForCausalLM (tied embeddings) + PEFT CAUSAL_LM LoRA r=4, lora_alpha=8 on all seven "
                      "projections; base frozen."),
    "gpt2-lm-lora": ("gpt2", "lm", "lora", (["c_attn"], 4, 8), 1000,
                     "GPT2LMHeadModel + PEFT CAUSAL_LM LoRA r=4, lora_alpha=8 on the fused c_attn (in 32, out 96: "
                     "B's columns 0:32 feed q, 32:64 k, 64:96 v); base frozen."),
    "gpt2-lm-full": ("gpt2", "lm", "full", None, 1100,
                     "GPT2LMHeadModel; every parameter trains; lm_head is tied to transformer.wte, so "
                     "grad.transformer.wte.weight = lookup gradient + lm_head gradient (no grad.lm_head.weight). "
                     "The key slice [32:64] of each c_attn.bias gradient is round-off."),
}


def run_cases(inputs) -> list[str]:
    cls_labels = torch.tensor(CLS_LABELS, dtype=torch.int64)
    lm_lab = lm_labels(inputs)
    assert int((lm_lab[:, 1:] != -100).sum()) == sum(n - PROMPT_TOKENS for n in LENGTHS)
    names = []
    for name, (arch, task, mode, spec, seed, desc) in CASES.items():
        labels = cls_labels if task == "cls" else lm_lab
        cls_name = (CLS_CLASSES if task == "cls" else LM_CLASSES)[arch].__name__
        meta = {"model": DIRS[arch].name, "arch": arch, "class": cls_name, "task": task, "mode": mode}
        if task == "cls":
            meta["num_labels"] = NUM_LABELS
        if mode == "lora":
            targets, r, alpha = spec
            t, lg, ls, lora, saved = case_lora(arch, task, targets, r, alpha, inputs, labels, seed)
            meta.update({"lora": lora, "modules_to_save": saved})
        else:
            t, lg, ls = case_base(arch, task, spec, inputs, labels, seed)
            meta.update({"lora": None, "modules_to_save": []})
        meta["seed"] = seed
        meta["description"] = desc
        write_case(name, meta, t, lg, ls, inputs, labels)
        names.append(name)
    return names


# --------------------------------------------------------------------------------------
# Rope inverse frequencies straight from transformers
# --------------------------------------------------------------------------------------
def rope_table() -> None:
    entries = []

    def add(label, cfg):
        rp = cfg.rope_parameters
        if rp["rope_type"] == "default":  # no entry in ROPE_INIT_FUNCTIONS: the rotary module computes it
            d = cfg.head_dim
            inv = 1.0 / (rp["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
            attn_factor = 1.0
        else:
            inv, attn_factor = ROPE_INIT_FUNCTIONS[rp["rope_type"]](cfg, "cpu")
        entries.append({
            "label": label,
            "head_dim": cfg.head_dim,
            "rope_parameters": dict(sorted(rp.items())),
            "attention_factor": float(attn_factor),
            "inv_freq": [float(x) for x in inv.float()],
        })

    # transformers' own rotary modules for the tiny models (the default rope has no entry in ROPE_INIT_FUNCTIONS).
    for arch in ("llama", "qwen2"):
        m = load(arch, "lm")
        cfg = m.config
        inv = m.model.rotary_emb.inv_freq.float()
        entries.append({
            "label": f"tiny-{arch}",
            "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
            "rope_parameters": dict(sorted(cfg.rope_parameters.items())),
            "attention_factor": float(m.model.rotary_emb.attention_scaling),
            "inv_freq": [float(x) for x in inv],
        })
    smol = LlamaConfig(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                       max_position_embeddings=8192, rope_theta=100000.0)
    add("SmolLM2-135M (default rope, theta 100000, head_dim 64)", smol)
    l31 = LlamaConfig(hidden_size=4096, num_attention_heads=32, head_dim=128, max_position_embeddings=131072,
                      rope_theta=500000.0,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    add("Llama-3.1-8B (llama3, factor 8, head_dim 128)", l31)
    l32 = LlamaConfig(hidden_size=2048, num_attention_heads=32, head_dim=64, max_position_embeddings=131072,
                      rope_theta=500000.0,
                      rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    add("Llama-3.2-1B (llama3, factor 32, head_dim 64)", l32)
    for e in entries:  # the formula of the description (inv_freq_from_config) reproduces every entry
        cfg = {"rope_parameters": e["rope_parameters"], "head_dim": e["head_dim"]}
        mine = inv_freq_from_config(cfg)
        ref = torch.tensor(e["inv_freq"])
        assert torch.allclose(mine, ref, rtol=1e-6, atol=0), (e["label"], (mine - ref).abs().max())
        if e["rope_parameters"]["rope_type"] == "llama3":
            rp = e["rope_parameters"]
            base = torch.tensor([rp["rope_theta"] ** (-(2 * i) / e["head_dim"]) for i in range(e["head_dim"] // 2)])
            wl = 2 * math.pi / base
            orig = rp["original_max_position_embeddings"]
            e["branches"] = {
                "kept": int((wl < orig / rp["high_freq_factor"]).sum()),
                "smoothed": int(((wl >= orig / rp["high_freq_factor"]) & (wl <= orig / rp["low_freq_factor"])).sum()),
                "divided": int((wl > orig / rp["low_freq_factor"]).sum()),
            }
    doc = {
        "description": "inv_freq[i] for i in 0..head_dim/2 as transformers computes them (float32 values, "
                       "written as decimal). default: inv_freq = theta^(-2i/head_dim). llama3 (transformers "
                       "_compute_llama3_parameters): wavelen = 2*pi/inv_freq; low_wl = orig/low_freq_factor, "
                       "high_wl = orig/high_freq_factor; wavelen < high_wl: kept; wavelen > low_wl: inv_freq/factor; "
                       "otherwise s = (orig/wavelen - low_freq_factor)/(high_freq_factor - low_freq_factor), "
                       "inv_freq = (1-s)*inv_freq/factor + s*inv_freq. cos/sin = cos/sin(pos * inv_freq) "
                       "(times attention_factor, 1 here), repeated twice along head_dim (rotate_half layout: "
                       "x*cos + cat(-x2, x1)*sin with x1 = x[:d/2], x2 = x[d/2:]).",
        "entries": entries,
    }
    with open(OUT / "rope-inv-freq.json", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


# --------------------------------------------------------------------------------------
# Independent re-check: a plain functional forward (what the engine does), driven only by the files
# on disk and the fixture's conventions.
# --------------------------------------------------------------------------------------
def inv_freq_from_config(cfg: dict) -> torch.Tensor:
    """inv_freq from a config.json dict (rope_parameters + head_dim or hidden_size / num_attention_heads)."""
    rp = cfg["rope_parameters"]
    d = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    inv = [rp["rope_theta"] ** (-(2 * i) / d) for i in range(d // 2)]
    if rp["rope_type"] == "llama3":
        f, lo, hi, orig = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], rp[
            "original_max_position_embeddings"]
        out = []
        for w in inv:
            wl = 2 * math.pi / w
            if wl < orig / hi:
                out.append(w)
            elif wl > orig / lo:
                out.append(w / f)
            else:
                s = (orig / wl - lo) / (hi - lo)
                out.append((1 - s) * w / f + s * w)
        inv = out
    else:
        assert rp["rope_type"] == "default", rp
    return torch.tensor(inv, dtype=torch.float64).float()


def functional_logits(cfg, p, lora, scale, ids, mask, task):
    """cfg: config.json; p: state_dict key -> tensor (plus score.weight); lora: module path -> (A, B)."""
    arch = cfg["model_type"]
    bsz, t = ids.shape

    def lin(x, path, conv1d=False):
        w = p[path + ".weight"]
        y = x @ w if conv1d else x @ w.t()
        if path + ".bias" in p:
            y = y + p[path + ".bias"]
        if path in lora:
            a, b = lora[path]
            y = y + scale * ((x @ a) @ b)
        return y

    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    allowed = causal[None, None] & (mask[:, None, None, :] == 1)  # [b, 1, tq, tk]

    def attend(q, k, v, n_heads, n_kv):
        dh = q.shape[-1] // n_heads
        q = q.view(bsz, t, n_heads, dh).transpose(1, 2)
        k = k.view(bsz, t, n_kv, dh).transpose(1, 2)
        v = v.view(bsz, t, n_kv, dh).transpose(1, 2)
        return q, k, v, dh

    def softmax_attn(q, k, v, dh):
        s = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
        s = s.masked_fill(~allowed, float("-inf"))
        return s.softmax(-1) @ v

    if arch == "gpt2":
        h_dim, n_heads, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
        ln = lambda x, path: F.layer_norm(x, (h_dim,), p[path + ".weight"], p[path + ".bias"], eps)  # noqa: E731
        gelu_new = lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))  # noqa
        h = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][:t][None]
        for i in range(cfg["n_layer"]):
            L = f"transformer.h.{i}."
            qkv = lin(ln(h, L + "ln_1"), L + "attn.c_attn", conv1d=True)
            q, k, v = qkv.split(h_dim, dim=-1)
            q, k, v, dh = attend(q, k, v, n_heads, n_heads)
            a = softmax_attn(q, k, v, dh).transpose(1, 2).reshape(bsz, t, h_dim)
            h = h + lin(a, L + "attn.c_proj", conv1d=True)
            f = lin(gelu_new(lin(ln(h, L + "ln_2"), L + "mlp.c_fc", conv1d=True)), L + "mlp.c_proj", conv1d=True)
            h = h + f
        h = ln(h, "transformer.ln_f")
        emb = p["transformer.wte.weight"]
    else:
        h_dim, n_heads, n_kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
        eps = cfg["rms_norm_eps"]

        def rms(x, path):
            return p[path + ".weight"] * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

        inv = inv_freq_from_config(cfg)
        ang = torch.arange(t, dtype=torch.float32)[:, None] * inv[None]  # [t, d/2]
        cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)

        def rope(x):  # [b, h, t, d]
            half = x.shape[-1] // 2
            rot = torch.cat([-x[..., half:], x[..., :half]], -1)
            return x * cos + rot * sin

        emb = p["model.embed_tokens.weight"]
        # nn.Embedding(padding_idx=pad): the lookup sends no gradient to the pad row (the lm_head still does).
        is_pad = (ids == cfg["pad_token_id"])[..., None]
        h = torch.where(is_pad, emb.detach()[ids], emb[ids])
        for i in range(cfg["num_hidden_layers"]):
            L = f"model.layers.{i}."
            x = rms(h, L + "input_layernorm")
            q, k, v = (lin(x, L + f"self_attn.{n}_proj") for n in "qkv")
            q, k, v, dh = attend(q, k, v, n_heads, n_kv)
            q, k = rope(q), rope(k)
            rep = n_heads // n_kv  # query head j uses KV head j // rep
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            a = softmax_attn(q, k, v, dh).transpose(1, 2).reshape(bsz, t, n_heads * dh)
            h = h + lin(a, L + "self_attn.o_proj")
            x = rms(h, L + "post_attention_layernorm")
            h = h + lin(F.silu(lin(x, L + "mlp.gate_proj")) * lin(x, L + "mlp.up_proj"), L + "mlp.down_proj")
        h = rms(h, "model.norm")
    if task == "cls":
        last = mask.sum(1) - 1  # right padding, no pad id among the real tokens
        return lin(h[torch.arange(bsz), last], "score")
    if cfg["tie_word_embeddings"]:
        return h @ emb.t()
    return lin(h, "lm_head")


def verify_case(name: str) -> float:
    """Recompute logits, loss and every gradient of a case from the files; return the worst rel. error."""
    meta = json.loads((OUT / f"{name}.json").read_text())
    fx = load_file(OUT / f"{name}.safetensors")
    folder = OUT / meta["model"]
    cfg = json.loads((folder / "config.json").read_text())
    p = {k: v.clone() for k, v in load_file(folder / "model.safetensors").items()}
    p.update({k[len("param."):]: v.clone() for k, v in fx.items() if k.startswith("param.")})
    lora, scale = {}, 0.0
    if meta["lora"] is not None:
        scale = meta["lora"]["scale"]
        lora = {m: (fx[f"lora.{m}.A"].clone(), fx[f"lora.{m}.B"].clone()) for m in meta["lora"]["modules"]}
    leaves = {}
    for key in meta["trainable"]:
        path = key[len("grad."):]
        if path.endswith((".A", ".B")) and path[:-2] in lora:
            t = lora[path[:-2]][0 if path.endswith(".A") else 1]
        else:
            t = p[path]
        leaves[key] = t.requires_grad_(True)
    ids, mask = fx["input_ids"], fx["attention_mask"]
    logits = functional_logits(cfg, p, lora, scale, ids, mask, meta["task"])
    labels = fx["labels"]
    if meta["task"] == "cls":
        loss = F.cross_entropy(logits, labels)
    else:
        tgt = labels[:, 1:]
        lp = logits[:, :-1].log_softmax(-1)
        keep = tgt != -100
        loss = -(lp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0] * keep).sum() / keep.sum()
    loss.backward()

    def rel(a, b):
        return ((a - b).abs().max() / (b.abs().max() + 1e-6)).item()

    worst = max(rel(logits.detach(), fx["logits"]), rel(loss.detach().reshape(1), fx["loss"]))
    for key, t in leaves.items():
        worst = max(worst, rel(t.grad, fx[key]))
    if cfg["model_type"] != "gpt2" and not cfg["tie_word_embeddings"] and "grad.model.embed_tokens.weight" in fx:
        assert torch.all(fx["grad.model.embed_tokens.weight"][cfg["pad_token_id"]] == 0)
    assert worst < 1e-4, (name, worst)
    return worst


def summary(names: list[str]) -> None:
    """Reload every case file; print its tensor count, min/max |grad|, loss and the worst relative error of the
    independent functional re-check (verify_case)."""
    print()
    print(f"{'case':24} {'tensors':>7} {'grads':>5} {'min|g|max':>10} {'max|grad|':>11} {'loss':>10} {'recheck':>8}")
    total = 0
    for name in names:
        path = OUT / f"{name}.safetensors"
        total += path.stat().st_size + (OUT / f"{name}.json").stat().st_size
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
            grads = [f.get_tensor(k) for k in keys if k.startswith("grad.")]
            loss = f.get_tensor("loss")
        meta = json.loads((OUT / f"{name}.json").read_text())
        assert sorted(meta["trainable"]) == sorted(k for k in keys if k.startswith("grad."))
        gmax = max(g.abs().max().item() for g in grads)
        gmin = min(g.abs().max().item() for g in grads)
        err = verify_case(name)
        print(f"{name:24} {len(keys):7d} {len(grads):5d} {gmin:10.2e} {gmax:11.4e} {loss.item():10.6f} {err:8.1e}")
    for d in DIRS.values():
        total += sum(p.stat().st_size for p in d.iterdir())
    total += (OUT / "rope-inv-freq.json").stat().st_size
    print(f"total decoder fixture size: {total} bytes")
    assert total < 3_000_000, total


def main() -> None:
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    OUT.mkdir(parents=True, exist_ok=True)
    build_models()
    check_activations()
    rope_table()
    inputs = make_inputs()
    names = run_cases(inputs)
    summary(names)


if __name__ == "__main__":
    main()
