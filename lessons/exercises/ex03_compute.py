# %% [markdown]
# # Exercise 3: the FLOPs of a forward pass, and of training (slide 6)
#
# Count what the matrix multiplies of the model do, then `minitx grade ex03_compute.py`. The grader runs the
# model (`minitx.count()` around a forward pass, and around a training step's forward and backward) and takes
# 2 × the multiply-adds (MACs) its counters saw. Lesson 3 (`lessons/03_compute.py`) is the background.
#
# Conventions (minitx.conventions): an (N, K) @ (K, M) matmul is N·K·M multiply-adds, 2·N·K·M FLOPs. Attention's
# QKᵀ and A·V are matmuls over the full T × T rectangle, the masked half included, per sequence and head.

# %%
def forward_matmul_flops(cfg, batch, seq_len) -> int:
    """2 × the MACs of every matrix multiply in one inference forward over `batch` sequences of `seq_len`
    tokens: the q/k/v, output and MLP projections of every layer, the LM head (a C × V matmul on every token,
    tied or not), and attention's QKᵀ and A·V (per layer, sequence and query head: (T × HS) @ (HS × T), then
    (T × T) @ (T × HS)). Not counted: bias additions, norms, softmax, activations, the embedding lookup (a
    gather). Return an int.
    """
    raise NotImplementedError


# %%
def training_matmul_flops(cfg, batch, seq_len) -> int:
    """2 × the MACs of every matrix multiply in one training step's forward *and* backward over `batch`
    sequences of `seq_len` tokens (the same matmuls as above, then their backward; AdamW does no matmul).
    How does it compare with forward_matmul_flops? Return an int.
    """
    raise NotImplementedError
