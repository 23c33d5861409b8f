"""`minitx generate`: continue a prompt with a model saved by `minitx train`, streaming text as it comes.

    minitx generate --checkpoint runs/model.ckpt --prompt "def " --max-new-tokens 200 --temperature 0.8 --seed 0

Prints the prompt, then each new token as soon as it is sampled, then a newline. Byte-level models emit one
UTF-8 byte per token, so a character may arrive in pieces: an incremental decoder holds the pieces back until the
character is complete (invalid bytes print as U+FFFD, as ByteTokenizer.decode does).
"""
from __future__ import annotations

import argparse
import codecs
import sys

DEFAULT_MAX_NEW_TOKENS = 200   # without --max-new-tokens: this many, or as many as fit the context if fewer


def add_arguments_main(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="a checkpoint written by `minitx train`")
    parser.add_argument("--prompt", required=True, metavar="TEXT", help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                        help="tokens to generate at most (default: 200, or as many as fit the model's context "
                             "after the prompt if fewer; prompt + N must fit the context)")
    parser.add_argument("--temperature", type=float, default=0.8, metavar="T",
                        help="0 for greedy; higher is more random (default 0.8)")
    parser.add_argument("--top-k", type=int, default=None, metavar="K", help="sample only from the K likeliest")
    parser.add_argument("--top-p", type=float, default=None, metavar="P",
                        help="sample only from the smallest set of tokens whose probability reaches P (nucleus)")
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="seed for reproducible sampling")


def main(args: argparse.Namespace) -> int:
    from ..core.generate import stream
    from ..io.checkpoint import load_model
    from ..io.data import ByteTokenizer

    try:
        loaded = load_model(args.checkpoint)      # (model, optimizer or None, meta)
    except FileNotFoundError:
        raise ValueError(f"checkpoint {args.checkpoint!r} not found (`minitx train --out PATH` writes one)") \
            from None
    except IsADirectoryError:
        raise ValueError(f"checkpoint {args.checkpoint!r} is a directory; give the checkpoint file") from None
    model, meta = loaded[0], loaded[-1]
    if meta.get("tokenizer") != "bytes":
        raise ValueError(f"{args.checkpoint}: tokenizer {meta.get('tokenizer')!r} is not supported "
                         "(minitx generate reads byte-level checkpoints: tokenizer 'bytes')")
    if model.cfg.vocab_size > ByteTokenizer.vocab_size:
        raise ValueError(f"{args.checkpoint}: a byte-level model has at most {ByteTokenizer.vocab_size} tokens, "
                         f"this one has vocab_size={model.cfg.vocab_size}")
    if args.prompt == "":
        raise ValueError("--prompt is empty: give some text to continue")
    ids = ByteTokenizer().encode(args.prompt)
    n_ctx = model.cfg.n_ctx
    room = n_ctx - len(ids)
    if room < 1:
        raise ValueError(f"the prompt has {len(ids)} tokens (bytes), which leaves no room in the model's context "
                         f"of n_ctx={n_ctx} tokens; shorten the prompt")
    if args.max_new_tokens is None:
        args.max_new_tokens = min(DEFAULT_MAX_NEW_TOKENS, room)
    elif args.max_new_tokens > room:
        raise ValueError(f"the prompt has {len(ids)} tokens (bytes); with --max-new-tokens {args.max_new_tokens} "
                         f"that is {len(ids) + args.max_new_tokens} > the model's context n_ctx={n_ctx} (at most "
                         f"{room} new tokens fit; leave --max-new-tokens out to generate as many)")
    # stream() checks every argument before the first token, so bad input fails before anything is printed
    tokens = stream(model, [ids], args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                    top_p=args.top_p, seed=args.seed)
    out = sys.stdout
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out.write(args.prompt)
    out.flush()
    for _, token in tokens:
        out.write(utf8.decode(bytes([token])))
        out.flush()
    out.write(utf8.decode(b"", final=True) + "\n")
    out.flush()
    return 0
