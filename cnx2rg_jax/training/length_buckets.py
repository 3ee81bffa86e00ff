"""Length-bucketed training batches: each batch's report tokens cut to the smallest of a few
lengths that holds its longest report, so that the relational memory's scan and the decoder run
over the tokens that are there, with a bounded number of compiled train steps.

The cut drops padding only (every row's mask is 1 from BOS to EOS and 0 after), and the decoder
is causal, so the loss and its gradients are those of the fully padded batch (up to the order of
float sums). In a multi-process run every process takes the largest of the processes' choices,
so that the global batch has one shape.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.experimental import multihost_utils

TOKEN_KEYS = ("report_tokens", "report_mask")
MULTIPLE = 8  # bucket lengths are multiples of this (vector-friendly shapes), but never above max


def bucket_lengths(max_tokens: int, num_buckets: int) -> tuple[int, ...]:
  """`num_buckets` lengths spread evenly up to `max_tokens` (the last is max_tokens itself),
  each rounded up to a multiple of MULTIPLE; 1 bucket = always the full length."""
  if num_buckets < 1:
    raise ValueError(f"num_buckets={num_buckets}; use 1 (no bucketing) or more")
  lengths = {min(max_tokens, MULTIPLE * math.ceil(max_tokens * k / num_buckets / MULTIPLE))
             for k in range(1, num_buckets + 1)}
  return tuple(sorted(lengths))


def needed_length(mask: np.ndarray) -> int:
  """The longest row of a [B, T] mask (BOS to EOS), i.e. the tokens the batch really has."""
  return int(np.asarray(mask).sum(axis=1).max(initial=0))


def choose(buckets: tuple[int, ...], needed: int) -> int:
  """The smallest bucket of at least `needed` tokens (the largest when none is)."""
  return next((b for b in buckets if b >= needed), buckets[-1])


def agreed(length: int) -> int:
  """The largest of every process's `length` (itself with one process)."""
  if jax.process_count() == 1:
    return length
  return int(np.max(multihost_utils.process_allgather(np.asarray(length, np.int32))))


def cut(local: dict, length: int) -> dict:
  """The batch with its token arrays cut to `length` positions."""
  return {k: (v[:, :length] if k in TOKEN_KEYS else v) for k, v in local.items()}
