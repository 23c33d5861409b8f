#!/usr/bin/env python
"""Generate PyTorch / Hugging Face reference fixtures for minitx's tests.

NEVER RUN BY CI.  This script is run by hand, once in a while, and its output
(small ``.npz`` files under ``tests/fixtures/``) is committed to the repository.
PyTorch and transformers are NOT runtime (or test-time) dependencies of minitx:
the tests only read the ``.npz`` files with NumPy.

To regenerate, in a virtual environment with ``pip install torch transformers numpy``:

    python tools/make_fixtures.py            # writes tests/fixtures/*.npz
    python tools/make_fixtures.py --out DIR  # somewhere else
    python tools/make_fixtures.py --only mistral_window_tiny  # just that file
    python tools/make_fixtures.py --half     # <name>_half.npz: the same models in bfloat16 and float16

Each fixture has its own seed, so ``--only`` writes the same arrays as a full
run (and leaves the other files, and their zip timestamps, untouched).

This follows the llm.c pattern: build a tiny model in the reference framework,
run one forward/backward pass and a few optimizer steps, and dump everything
(inputs, weights, logits, loss, every gradient, weights after training, greedy
generations) so that a from-scratch implementation can be checked against it.

For every config in ``CONFIGS`` we write ``<name>.npz`` holding:

    format_version        int64 scalar (1)
    torch_version         0-d str array
    transformers_version  0-d str array
    config_json           0-d str array: json.dumps(model.config.to_dict()),
                          i.e. what a real config.json would contain
    tokens, targets       (2, T) int64; ``targets`` are explicit (NOT shifted labels);
                          T = 8 (T = 12 for mistral_window_tiny, see FIXTURE_OPTIONS)
    param/<name>          every entry of model.state_dict(), float32, HF layout
                          as stored (GPT-2 Conv1D weights are (in, out);
                          Llama/Mistral/Gemma nn.Linear weights are (out, in))
    logits                (2, T, V) float32, forward on ``tokens``
    loss                  float32 scalar, F.cross_entropy(logits, targets), mean
    grad/<name>           d loss / d param for every model.named_parameters()
                          (a tied weight appears once, both contributions summed)
    adamw_lr, adamw_beta1, adamw_beta2, adamw_eps, adamw_weight_decay
                          float64 scalars
    adamw_losses          (5,) float32, loss before each of 5 AdamW steps
    after/<name>          every named parameter after the 5 AdamW steps
    gen_prompt_{0,1}      (P,) int64 prompts (lengths 3 and 6)
    gen_output_{0,1}      (N,) int64 greedy continuation (new tokens only),
                          produced by HF ``generate`` with its own KV cache;
                          N = 10 (N = 16 for mistral_window_tiny)
    gen_min_margin        float32, smallest top1 - top2 logit gap along both
                          greedy paths (>= 1e-2, so float32 noise cannot flip a token)

Notes on what transformers does (observed with transformers 5.24.0, torch 2.13.0):

* Tied ``lm_head.weight`` (gpt2_tiny, gemma_tiny): it IS present in
  ``state_dict()`` (as the very same tensor as the token embedding), so the
  fixture holds ``param/lm_head.weight`` as an identical copy of
  ``param/transformer.wte.weight`` / ``param/model.embed_tokens.weight``.
  ``named_parameters()`` lists the shared tensor once, under the embedding's
  name, so there is no ``grad/lm_head.weight`` or ``after/lm_head.weight`` for
  tied models.
* Buffers: none appear in ``state_dict()``.  The RoPE ``inv_freq`` /
  ``original_inv_freq`` buffers and Gemma's ``embed_scale`` are registered as
  non-persistent, and GPT-2 no longer keeps a causal-mask ``attn.bias`` buffer.
  (minitx should still ignore any non-parameter entry it does not know.)
* RoPE: ``rope_theta`` passed to the config is moved into
  ``config.rope_parameters = {"rope_type": "default", "rope_theta": ...}``; the
  saved config has no top-level ``rope_theta`` any more.
* We set ``pad_token_id=None`` everywhere: with a pad id, Llama/Gemma build
  ``nn.Embedding(..., padding_idx=pad)``, whose row ``pad`` silently receives no
  gradient (HF's Gemma config defaults to pad_token_id=0).  We also set
  ``bos_token_id``/``eos_token_id`` to None so greedy generation never stops
  early (GPT-2's defaults, 50256, are not even inside our vocabulary).
* Mistral's sliding window (``mistral_window_tiny``, W = ``sliding_window`` = 5):
  query position i attends to key positions j with i - W < j <= i, i.e. W keys
  counting itself.  ``MistralModel.forward`` uses
  ``masking_utils.create_sliding_window_causal_mask`` whenever
  ``config.sliding_window`` is not None; its mask function is
  ``sliding_window_causal_mask_function(W)`` = ``sliding_window_overlay(W)``
  (``kv_idx > q_idx - sliding_window``) AND ``causal_mask_function``
  (``kv_idx <= q_idx``); ``eager_mask`` turns it into 0 / finfo(float32).min,
  added to the scores.  (transformers 4.57.6 has the same rule.)  In
  ``generate`` the cache is a ``DynamicCache`` of ``DynamicSlidingWindowLayer``s,
  a rolling cache that keeps only the last W - 1 keys/values of each layer and
  concatenates the new one, so each decode step sees exactly W keys.
  For this fixture we also check that a window of W - 1, W + 1 or none gives
  clearly different logits and would pick another token somewhere along each
  set of greedy paths (``wrong_window_models``, ``wrong_choice_margin``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

# ---------------------------------------------------------------------------
# The tiny configs.  Plain dicts, exactly the keys a config.json would hold.
# ---------------------------------------------------------------------------

# Shared by all configs: random tiny models have no special tokens (see docstring).
NO_SPECIAL_TOKENS = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}

CONFIGS: dict[str, dict] = {
    "gpt2_tiny": {
        "model_type": "gpt2",
        "vocab_size": 96,
        "n_positions": 32,
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "n_inner": None,  # None means 4 * n_embd = 128
        "activation_function": "gelu_new",  # tanh approximation of GELU
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "summary_first_dropout": 0.0,
        **NO_SPECIAL_TOKENS,
    },
    "llama_tiny_gqa": {
        "model_type": "llama",
        "vocab_size": 96,
        "hidden_size": 32,
        "intermediate_size": 80,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,  # grouped-query attention: 2 query heads per kv head
        "head_dim": 12,  # deliberately != hidden_size / num_attention_heads (= 8)
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        **NO_SPECIAL_TOKENS,
    },
    "mistral_tiny": {
        "model_type": "mistral",
        "vocab_size": 96,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,  # multi-query attention: one kv head for all
        "head_dim": 8,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1e6,
        "sliding_window": None,  # plain causal attention
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        **NO_SPECIAL_TOKENS,
    },
    "gemma_tiny": {  # Gemma 1 (GemmaForCausalLM)
        "model_type": "gemma",
        "vocab_size": 96,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 16,  # q_proj is 32 -> 64, wider than hidden_size
        # Released Gemma config.json files carry both keys; transformers 5.x
        # reads `hidden_act`, 4.x read `hidden_activation`.  Both are the tanh GELU.
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 64,
        "tie_word_embeddings": True,
        **NO_SPECIAL_TOKENS,
    },
    # Mistral v0.1-style sliding-window attention with a window (5) much shorter
    # than the sequences (12 for the forward pass, up to 22 when generating),
    # so that the window really hides keys.  See FIXTURE_OPTIONS below.
    "mistral_window_tiny": {
        "model_type": "mistral",
        "vocab_size": 61,
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,  # grouped-query attention: 2 query heads per kv head
        "head_dim": 6,  # deliberately != hidden_size / num_attention_heads (= 4)
        "max_position_embeddings": 32,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "sliding_window": 5,  # query i sees keys j with i - 5 < j <= i
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        **NO_SPECIAL_TOKENS,
    },
}

SEED = 1234  # base seed; config i uses SEED + i
BATCH, SEQ = 2, 8  # shape of tokens / targets

# Weight init (see init_weights): HF's std=0.02 gives near-uniform softmaxes.
EMBED_STD = 0.3  # token/position embeddings and an untied lm_head
MATRIX_STD = 0.3  # every other weight matrix (with 0.15 the tied Gemma model just
#                   echoes its input token, which makes generation a weak test)
NORM_NOISE_STD = 0.1  # added to every norm weight (HF inits them to 1, or 0 for Gemma)
BIAS_NOISE_STD = 0.1  # added to every bias (HF inits them to 0)

ADAMW = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1}
ADAMW_STEPS = 5

GEN_PROMPT_LENGTHS = (3, 6)
GEN_NEW_TOKENS = 10
GEN_MIN_MARGIN = 1e-2  # required gap between top-1 and top-2 logits along the greedy path
GEN_MIN_DISTINCT = 3  # each continuation must hold >= 3 distinct tokens (not "x x x x ...")
GEN_MAX_TRIES = 1000

# Per-fixture overrides of the settings above (a fixture not listed uses the
# defaults).  ``mistral_window_tiny`` has longer sequences than its window, and
# generates past the window; its model is narrower (hidden 16), so its weights
# are scaled up by sqrt(32 / 16) to keep logits about as peaked as the others'.
DEFAULT_OPTIONS = {
    "seq": SEQ,
    "embed_std": EMBED_STD,
    "matrix_std": MATRIX_STD,
    "gen_prompt_lengths": GEN_PROMPT_LENGTHS,
    "gen_new_tokens": GEN_NEW_TOKENS,
}
FIXTURE_OPTIONS: dict[str, dict] = {
    "mistral_window_tiny": {
        "seq": 12,
        "embed_std": 0.3 * 2**0.5,
        "matrix_std": 0.3 * 2**0.5,
        "gen_prompt_lengths": (3, 6),  # 6 > window: the prefill itself is windowed
        "gen_new_tokens": 16,  # up to position 21, far past the window of 5
    },
}


def options(name: str) -> dict:
    return {**DEFAULT_OPTIONS, **FIXTURE_OPTIONS.get(name, {})}


# ---------------------------------------------------------------------------
# Building the model
# ---------------------------------------------------------------------------


def build_config(config_dict: dict) -> transformers.PretrainedConfig:
    """Turn a plain config dict into the HF config object for its model_type."""
    kwargs = dict(config_dict)
    model_type = kwargs.pop("model_type")
    return AutoConfig.for_model(model_type, **kwargs)


def build_model(config: transformers.PretrainedConfig) -> torch.nn.Module:
    """A float32 *ForCausalLM with the plain ("eager") attention implementation."""
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    # save_pretrained() records the class name in config.json; do the same so
    # that config_json looks like a real checkpoint's config.
    model.config.architectures = [type(model).__name__]
    model.eval()  # dropout is 0 anyway; eval() just makes that explicit
    return model


def norm_weight_names(model: torch.nn.Module) -> set[str]:
    """Names of the weights of every LayerNorm / RMSNorm module."""
    names = set()
    for module_name, module in model.named_modules():
        if "Norm" in type(module).__name__:  # LayerNorm, LlamaRMSNorm, GemmaRMSNorm, ...
            names.add(f"{module_name}.weight")
    return names


def embedding_like_names(model: torch.nn.Module) -> set[str]:
    """Names of the embedding tables, plus an untied output projection."""
    names = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    names.add("lm_head.weight")  # only matters when untied (tied: named as the embedding)
    return names


@torch.no_grad()
def init_weights(
    model: torch.nn.Module,
    gen: torch.Generator,
    embed_std: float = EMBED_STD,
    matrix_std: float = MATRIX_STD,
) -> None:
    """Re-initialise every parameter so the fixtures exercise all the maths.

    * embeddings / untied lm_head ~ N(0, EMBED_STD^2), other matrices ~ N(0, MATRIX_STD^2):
      large enough that logits spread over a few units (std ~1.7), so the
      softmax is far from uniform and greedy decoding has clear winners;
    * norm weights and biases keep HF's init (1, 0, or 0 for Gemma's (1 + w)
      norms) plus small noise, so that a bug such as forgetting the norm gain,
      using w instead of 1 + w, or dropping a bias changes the output.
    """
    norms = norm_weight_names(model)
    embeds = embedding_like_names(model)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        if name in norms:
            p.add_(NORM_NOISE_STD * noise)
        elif name.endswith(".bias"):
            p.add_(BIAS_NOISE_STD * noise)
        elif name in embeds:
            p.copy_(embed_std * noise)
        else:
            p.copy_(matrix_std * noise)


def clone_model(config: transformers.PretrainedConfig, state: dict[str, np.ndarray]) -> torch.nn.Module:
    """A fresh model loaded with the given (HF-named) float32 arrays."""
    model = build_model(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model


# ---------------------------------------------------------------------------
# The reference computations
# ---------------------------------------------------------------------------


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over all B*T positions, against explicit targets."""
    vocab = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))


def forward_backward(model, tokens, targets) -> dict[str, np.ndarray]:
    """Logits, loss and the gradient of every named parameter."""
    model.zero_grad(set_to_none=True)
    logits = model(tokens).logits
    loss = loss_fn(logits, targets)
    loss.backward()
    out = {"logits": to_numpy(logits), "loss": np.float32(loss.item())}
    for name, p in model.named_parameters():
        out[f"grad/{name}"] = to_numpy(p.grad)
    model.zero_grad(set_to_none=True)
    return out


def adamw_run(model, tokens, targets) -> dict[str, np.ndarray]:
    """ADAMW_STEPS steps of torch.optim.AdamW on the same batch.

    torch's AdamW decays *every* parameter it is given (norm weights, biases
    and embeddings included), decoupled from the gradient: p *= 1 - lr * wd.
    """
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=ADAMW["lr"],
        betas=(ADAMW["beta1"], ADAMW["beta2"]),
        eps=ADAMW["eps"],
        weight_decay=ADAMW["weight_decay"],
    )
    losses = []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(tokens).logits, targets)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    out = {f"adamw_{k}": np.float64(v) for k, v in ADAMW.items()}
    out["adamw_losses"] = np.array(losses, dtype=np.float32)
    for name, p in model.named_parameters():
        out[f"after/{name}"] = to_numpy(p)
    return out


@torch.no_grad()
def hf_generate(model, prompt: torch.Tensor, new_tokens: int = GEN_NEW_TOKENS) -> torch.Tensor:
    """Greedy decoding with HF's own KV cache; returns only the new tokens."""
    ids = prompt[None, :]  # batch of one, no padding
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        do_sample=False,
        use_cache=True,
        pad_token_id=0,  # only to silence a warning: nothing is padded
    )
    return out[0, prompt.shape[0] :]


@torch.no_grad()
def greedy_margins(model, prompt: torch.Tensor, new_tokens: torch.Tensor) -> np.ndarray:
    """Top-1 minus top-2 logit at each greedy step, from plain (cache-free) forwards.

    Also checks that the argmax of each plain forward is the token generate() chose.
    """
    seq = torch.cat([prompt, new_tokens])
    margins = []
    for i in range(new_tokens.shape[0]):
        logits = model(seq[None, : prompt.shape[0] + i]).logits[0, -1]
        top2 = torch.topk(logits, 2)
        assert top2.indices[0].item() == new_tokens[i].item(), "cached and uncached greedy paths differ"
        margins.append((top2.values[0] - top2.values[1]).item())
    return np.array(margins, dtype=np.float32)


def generation(
    model,
    vocab: int,
    gen: torch.Generator,
    prompt_lengths: tuple[int, ...] = GEN_PROMPT_LENGTHS,
    num_new: int = GEN_NEW_TOKENS,
    wrong_models: dict[str, torch.nn.Module] | None = None,
) -> dict[str, np.ndarray]:
    """Draw random prompts until every greedy step has a clear winner.

    We also insist on continuations that are not one token repeated, so that
    the test really depends on what the KV cache remembers.  With
    ``wrong_models`` (same weights, wrong attention pattern), we also insist
    that each of them would clearly pick another token somewhere along the
    greedy paths, so that an implementation computing that pattern fails.
    """
    wrong_models = wrong_models or {}
    for _ in range(GEN_MAX_TRIES):
        out, min_margin, min_distinct = {}, np.inf, num_new
        caught = dict.fromkeys(wrong_models, False)
        for i, length in enumerate(prompt_lengths):
            prompt = torch.randint(0, vocab, (length,), generator=gen)
            new_tokens = hf_generate(model, prompt, num_new)
            assert new_tokens.shape == (num_new,)
            min_margin = min(min_margin, greedy_margins(model, prompt, new_tokens).min())
            min_distinct = min(min_distinct, len(set(new_tokens.tolist())))
            for wrong, wrong_model in wrong_models.items():
                caught[wrong] |= wrong_choice_margin(wrong_model, prompt, new_tokens) >= GEN_MIN_MARGIN
            out[f"gen_prompt_{i}"] = to_numpy(prompt).astype(np.int64)
            out[f"gen_output_{i}"] = to_numpy(new_tokens).astype(np.int64)
        if min_margin >= GEN_MIN_MARGIN and min_distinct >= GEN_MIN_DISTINCT and all(caught.values()):
            out["gen_min_margin"] = np.float32(min_margin)
            return out
    raise RuntimeError(f"no suitable prompts found in {GEN_MAX_TRIES} tries")


@torch.no_grad()
def wrong_choice_margin(wrong_model, prompt: torch.Tensor, new_tokens: torch.Tensor) -> float:
    """How clearly ``wrong_model`` departs from the greedy path ``new_tokens``.

    The largest, over the greedy steps, of (wrong_model's top logit) - (its
    logit for the token actually chosen), from one cache-free forward on
    prompt + new_tokens.  If this is >= GEN_MIN_MARGIN at some step, an
    implementation that computes wrong_model cannot reproduce new_tokens: it
    follows them until that step at most, and then picks another token.
    """
    seq = torch.cat([prompt, new_tokens])
    logits = wrong_model(seq[None, :-1]).logits[0, prompt.shape[0] - 1 :]
    chosen = logits.gather(1, new_tokens[:, None])[:, 0]
    return (logits.max(dim=1).values - chosen).max().item()


def wrong_window_models(config_dict: dict, state: dict[str, np.ndarray]) -> dict[str, torch.nn.Module]:
    """Same weights, but a window one too short, one too long, or none at all."""
    window = config_dict.get("sliding_window")
    if window is None:
        return {}
    variants = {"no_window": None, "window_minus_1": window - 1, "window_plus_1": window + 1}
    models = {}
    for name, wrong_window in variants.items():
        models[name] = clone_model(build_config({**config_dict, "sliding_window": wrong_window}), state)
    return models


def make_fixture(config_dict: dict, seed: int, opts: dict = DEFAULT_OPTIONS) -> dict[str, np.ndarray]:
    """Everything for one config, as a flat dict of NumPy arrays."""
    torch.manual_seed(seed)  # HF's own init uses the global RNG
    gen = torch.Generator().manual_seed(seed)  # our draws use this one

    config = build_config(config_dict)
    model = build_model(config)
    init_weights(model, gen, opts["embed_std"], opts["matrix_std"])
    vocab = config.vocab_size

    tokens = torch.randint(0, vocab, (BATCH, opts["seq"]), generator=gen)
    targets = torch.randint(0, vocab, (BATCH, opts["seq"]), generator=gen)

    fx: dict[str, np.ndarray] = {
        "format_version": np.int64(1),
        "torch_version": np.array(torch.__version__),
        "transformers_version": np.array(transformers.__version__),
        "config_json": np.array(json.dumps(model.config.to_dict(), sort_keys=True)),
        "tokens": to_numpy(tokens).astype(np.int64),
        "targets": to_numpy(targets).astype(np.int64),
    }
    initial = {k: to_numpy(v).astype(np.float32) for k, v in model.state_dict().items()}
    fx.update({f"param/{k}": v for k, v in initial.items()})

    fx.update(forward_backward(model, tokens, targets))
    wrong = wrong_window_models(config_dict, initial)
    for wrong_name, wrong_model in wrong.items():  # the window must change the logits
        with torch.no_grad():
            diff = (wrong_model(tokens).logits - model(tokens).logits).abs().max().item()
        assert diff > 0.1, f"{wrong_name}: logits differ by only {diff}"
        print(f"    {wrong_name}: max |logits difference| {diff:.3f}")
    fx.update(generation(model, vocab, gen, opts["gen_prompt_lengths"], opts["gen_new_tokens"], wrong))
    # AdamW on a fresh copy, so the steps start from exactly the stored weights.
    fx.update(adamw_run(clone_model(config, initial), tokens, targets))
    return fx


# ---------------------------------------------------------------------------
# Verification: reload what was written and re-derive it in torch
# ---------------------------------------------------------------------------


def config_from_json(config_json: str) -> transformers.PretrainedConfig:
    """Load config_json the way a checkpoint's config.json would be loaded."""
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write(config_json)
        return AutoConfig.from_pretrained(tmp)


def verify(path: str) -> None:
    """Reload the .npz without pickle and check it against a fresh torch model."""
    with np.load(path, allow_pickle=False) as z:
        fx = {k: z[k] for k in z.files}
    config = config_from_json(str(fx["config_json"]))
    state = {k[len("param/") :]: v for k, v in fx.items() if k.startswith("param/")}
    model = clone_model(config, state)

    tokens, targets = torch.from_numpy(fx["tokens"]), torch.from_numpy(fx["targets"])
    again = forward_backward(model, tokens, targets)
    assert np.array_equal(again["logits"], fx["logits"]), "logits not bit-identical"
    assert again["loss"] == fx["loss"], "loss not bit-identical"
    for k, v in again.items():
        if k.startswith("grad/"):
            assert np.array_equal(v, fx[k]), f"{k} not bit-identical"
    i = 0
    while f"gen_prompt_{i}" in fx:
        new = hf_generate(model, torch.from_numpy(fx[f"gen_prompt_{i}"]), fx[f"gen_output_{i}"].shape[0])
        assert np.array_equal(to_numpy(new), fx[f"gen_output_{i}"]), f"gen_output_{i} differs"
        i += 1
    assert i >= 1, "no generation prompts"

    size = os.path.getsize(path)
    assert size < 1_000_000, f"{path} is {size} bytes"
    print(f"{path}: {size / 1024:.0f} KiB, {len(fx)} arrays, verified")
    for k, v in fx.items():
        shown = repr(v.item())[:60] if v.ndim == 0 else str(v.shape)
        print(f"    {k:<50} {str(v.dtype):<8} {shown}")


# ---------------------------------------------------------------------------
# 16-bit fixtures: the same models run by HF in bfloat16 and float16
# ---------------------------------------------------------------------------

HALF_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@torch.no_grad()
def make_half_fixture(path: str) -> dict[str, np.ndarray]:
    """``<name>_half.npz`` from an existing ``<name>.npz`` (its config, weights, tokens and prompts): the HF model
    cast with ``model.to(dtype)`` (weights rounded to nearest even, as ml_dtypes and minitx round them), then for
    each dtype D in bfloat16, float16:

        logits_D           (2, T, V) float32   forward on ``tokens`` in D (the D values, exactly, as float32)
        gen_output_{i}_D   (N,) int64          HF ``generate`` greedy continuation of ``gen_prompt_i`` in D
        gen_margin_{i}_D   (N,) float32        top-1 minus top-2 logit at each of those steps, cache-free, in D
    """
    with np.load(path, allow_pickle=False) as z:
        fx = {k: z[k] for k in z.files}
    config = config_from_json(str(fx["config_json"]))
    state = {k[len("param/") :]: v for k, v in fx.items() if k.startswith("param/")}
    out: dict[str, np.ndarray] = {
        "format_version": np.int64(1),
        "torch_version": np.array(torch.__version__),
        "transformers_version": np.array(transformers.__version__),
    }
    tokens = torch.from_numpy(fx["tokens"])
    for name, dtype in HALF_DTYPES.items():
        model = clone_model(config, state).to(dtype)
        out[f"logits_{name}"] = to_numpy(model(tokens).logits.float())
        i = 0
        while f"gen_prompt_{i}" in fx:
            prompt = torch.from_numpy(fx[f"gen_prompt_{i}"])
            new = hf_generate(model, prompt, fx[f"gen_output_{i}"].shape[0])
            seq = torch.cat([prompt, new])
            margins = []
            for step in range(new.shape[0]):
                top2 = torch.topk(model(seq[None, : prompt.shape[0] + step]).logits[0, -1].float(), 2)
                margins.append((top2.values[0] - top2.values[1]).item())
            out[f"gen_output_{i}_{name}"] = to_numpy(new).astype(np.int64)
            out[f"gen_margin_{i}_{name}"] = np.array(margins, dtype=np.float32)
            i += 1
    return out


# ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="tests/fixtures", help="output directory (default: tests/fixtures)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(CONFIGS),
        metavar="NAME",
        help="write only these fixtures (default: all); each keeps its own seed, so the output is the same",
    )
    parser.add_argument(
        "--half",
        action="store_true",
        help="write <name>_half.npz (HF in bfloat16 and float16) from the existing <name>.npz files instead",
    )
    args = parser.parse_args()
    if args.half:
        for name in CONFIGS:
            if args.only and name not in args.only:
                continue
            path = os.path.join(args.out, f"{name}_half.npz")
            np.savez(path, **make_half_fixture(os.path.join(args.out, f"{name}.npz")))
            print(f"{path}: {os.path.getsize(path) / 1024:.0f} KiB")
        return

    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    for i, (name, config_dict) in enumerate(CONFIGS.items()):
        if args.only and name not in args.only:
            continue
        print(f"{name}:")
        fx = make_fixture(config_dict, SEED + i, options(name))
        path = os.path.join(args.out, f"{name}.npz")
        np.savez(path, **fx)
        verify(path)


if __name__ == "__main__":
    main()
