#!/usr/bin/python3
"""PyTorch DDP on vlmtrain's model shapes: the reference bench/ddp_compare.sh measures vlmtrain against.

The same architecture as model/ (pre-norm blocks, attention projections
shared over groups of layers, the image K/V computed once per cross-attention
sharing group, symmetric InfoNCE plus caption cross-entropy), the same
parameter count, AdamW with the same hyper-parameters and gradient clipping,
written as a PyTorch user would: eager modules, DistributedDataParallel over
gloo, torch.autocast for bf16. The two differences, both in PyTorch's favour:
the batches are random tensors made before timing (vlmtrain reads and
augments Fashion-MNIST inside its step), and the contrastive loss is per rank
(vlmtrain gathers the embeddings of every rank into one 128x128 loss).

    python3 bench/ddp_reference.py [--ranks 2] [--precision fp32|bf16] [--steps 8] [--warmup 2]

Prints one JSON line (rank 0): samples/s, step time, parameter count.
"""
import argparse
import json
import math
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", type=int, default=2, help="data-parallel processes on this machine")
    p.add_argument("--threads", type=int, default=0, help="threads per rank (0: cores / ranks)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--steps", type=int, default=8, help="timed steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--global-batch", type=int, default=128)
    # configs/bench.pbtxt's shapes on the PAIR task (28x56 grey images, 22 words, 12 tokens).
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ffn-mult", type=int, default=4)
    p.add_argument("--embed-dim", type=int, default=256)
    p.add_argument("--patch", type=int, default=7)
    p.add_argument("--image", type=int, nargs=2, default=[28, 56], metavar=("H", "W"))
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--vision-share", type=int, default=2)
    p.add_argument("--unimodal-layers", type=int, default=2)
    p.add_argument("--multimodal-layers", type=int, default=4)
    p.add_argument("--text-share", type=int, default=2)
    p.add_argument("--cross-kv-share", type=int, default=2)
    p.add_argument("--vocab", type=int, default=22)
    p.add_argument("--max-tokens", type=int, default=12)
    return p.parse_args()


def split_heads(x, heads):
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def merge_heads(x):
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


def attend(q, k, v, mask=None):
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, -1), v)


class SelfAttention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d)


class CrossKV(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.kv = nn.Linear(d, 2 * d, bias=False)

    def project(self, image_tokens, heads):
        k, v = self.kv(image_tokens).chunk(2, -1)
        return split_heads(k, heads), split_heads(v, heads)


class Block(nn.Module):
    def __init__(self, d, heads, ffn, self_attn, cross_kv=None):
        super().__init__()
        self.heads = heads
        self.ln_self = nn.LayerNorm(d)
        self.self_attn = self_attn  # shared: the same module object in every block of its group
        self.cross_kv = cross_kv
        if cross_kv is not None:
            self.ln_cross = nn.LayerNorm(d)
            self.cross_q = nn.Linear(d, d)
            self.cross_out = nn.Linear(d, d)
        self.ln_ffn = nn.LayerNorm(d)
        self.ffn_in = nn.Linear(d, ffn)
        self.ffn_out = nn.Linear(ffn, d)

    def forward(self, x, mask=None, image_kv=None):
        q, k, v = self.self_attn.qkv(self.ln_self(x)).chunk(3, -1)
        h = self.heads
        x = x + self.self_attn.out(merge_heads(attend(split_heads(q, h), split_heads(k, h), split_heads(v, h), mask)))
        if image_kv is not None:
            q = split_heads(self.cross_q(self.ln_cross(x)), h)
            x = x + self.cross_out(merge_heads(attend(q, image_kv[0], image_kv[1])))
        return x + self.ffn_out(F.gelu(self.ffn_in(self.ln_ffn(x))))


def groups(layers, size):
    return 1 if size == 0 else (layers + size - 1) // size


def group_of(layer, size):
    return 0 if size == 0 else layer // size


class Vlm(nn.Module):
    def __init__(self, a):
        super().__init__()
        d, heads, ffn = a.d_model, a.heads, a.d_model * a.ffn_mult
        self.a = a
        tokens = (a.image[0] // a.patch) * (a.image[1] // a.patch)
        self.patch_embed = nn.Linear(a.patch * a.patch, d)
        self.vision_pos = nn.Parameter(torch.zeros(1, tokens, d))
        vision_attn = [SelfAttention(d) for _ in range(groups(a.vision_layers, a.vision_share))]
        self.vision_blocks = nn.ModuleList(
            Block(d, heads, ffn, vision_attn[group_of(i, a.vision_share)]) for i in range(a.vision_layers))
        self.vision_norm = nn.LayerNorm(d)
        self.image_proj = nn.Linear(d, a.embed_dim, bias=False)
        self.token_embed = nn.Embedding(a.vocab, d)
        self.text_pos = nn.Parameter(torch.zeros(1, a.max_tokens, d))
        text_layers = a.unimodal_layers + a.multimodal_layers
        text_attn = [SelfAttention(d) for _ in range(groups(text_layers, a.text_share))]
        cross = [CrossKV(d) for _ in range(groups(a.multimodal_layers, a.cross_kv_share))]
        self.text_blocks = nn.ModuleList(
            Block(d, heads, ffn, text_attn[group_of(i, a.text_share)],
                  cross[group_of(i - a.unimodal_layers, a.cross_kv_share)] if i >= a.unimodal_layers else None)
            for i in range(text_layers))
        self.text_embed_norm = nn.LayerNorm(d)
        self.text_proj = nn.Linear(d, a.embed_dim, bias=False)
        self.caption_norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, a.vocab)
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1 / 0.07)))
        self.causal_mask = torch.ones(a.max_tokens, a.max_tokens, dtype=torch.bool).triu(1)  # a constant, not synchronised
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, images, tokens, lengths):
        a = self.a
        b, c, hgt, wid = images.shape
        p = a.patch
        patches = images.reshape(b, c, hgt // p, p, wid // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
        x = self.patch_embed(patches) + self.vision_pos
        for block in self.vision_blocks:
            x = block(x)
        image_tokens = self.vision_norm(x)
        image = F.normalize(self.image_proj(image_tokens.mean(1)), dim=-1)

        t = tokens.shape[1]
        mask = self.causal_mask[:t, :t]
        x = self.token_embed(tokens) + self.text_pos[:, :t]
        for block in self.text_blocks[:a.unimodal_layers]:
            x = block(x, mask)
        last = x.gather(1, (lengths - 1).view(b, 1, 1).expand(b, 1, x.shape[2])).squeeze(1)
        text = F.normalize(self.text_proj(self.text_embed_norm(last)), dim=-1)
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * (image.float() @ text.float().t())
        labels = torch.arange(b)
        contrastive = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))

        kv_per_group = {}
        for m, block in enumerate(self.text_blocks[a.unimodal_layers:]):
            g = group_of(m, a.cross_kv_share)
            if g not in kv_per_group:
                kv_per_group[g] = block.cross_kv.project(image_tokens, a.heads)
            x = block(x, mask, kv_per_group[g])
        logits = self.lm_head(self.caption_norm(x))[:, :-1].reshape(-1, a.vocab)
        caption = F.cross_entropy(logits.float(), tokens[:, 1:].reshape(-1), ignore_index=0)
        return contrastive + 2.0 * caption


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_batch(a, batch, generator):
    images = torch.randn(batch, 1, a.image[0], a.image[1], generator=generator)
    # The PAIR task's caption lengths: "<bos> a X left of a Y <eos>", one token
    # more for each side that is an "ankle boot" (1 class in 10).
    boots = torch.randint(0, 10, (batch, 2), generator=generator).eq(9).sum(1)
    lengths = 8 + boots
    # Padded to the batch's longest caption, as a collator does (and vlmtrain's loader).
    width = int(lengths.max())
    tokens = torch.randint(4, a.vocab, (batch, width), generator=generator)
    tokens[torch.arange(width).expand(batch, -1) >= lengths[:, None]] = 0  # <pad>
    return images, tokens, lengths


def worker(rank, a, port, result):
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=a.ranks)
    torch.manual_seed(0)
    model = Vlm(a)
    parameters = sum(p.numel() for p in model.parameters())
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.05)
    generator = torch.Generator().manual_seed(rank)
    batches = [random_batch(a, a.global_batch // a.ranks, generator) for _ in range(16)]  # widths vary as the task's do

    def step(i):
        images, tokens, lengths = batches[i % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = ddp(images, tokens, lengths)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    for i in range(a.warmup):
        step(i)
    dist.barrier()
    start = time.perf_counter()
    finite = all(math.isfinite(step(i)) for i in range(a.steps))
    dist.barrier()
    seconds = (time.perf_counter() - start) / a.steps
    if rank == 0:
        result.put({"bench": "ddp_reference", "ranks": a.ranks, "threads": a.threads, "precision": a.precision,
                    "parameters": parameters, "step_s": round(seconds, 5),
                    "samples_per_second": round(a.global_batch / seconds, 3), "correct": finite})
    dist.destroy_process_group()


def main():
    a = parse_args()
    if a.global_batch % a.ranks:
        raise SystemExit(f"--global-batch {a.global_batch} does not divide by --ranks {a.ranks}")
    if a.threads == 0:
        a.threads = max(1, (os.cpu_count() or 1) // a.ranks)
    context = mp.get_context("spawn")
    result = context.SimpleQueue()
    mp.start_processes(worker, args=(a, free_port(), result), nprocs=a.ranks, start_method="spawn")
    print(json.dumps(result.get()), flush=True)


if __name__ == "__main__":
    main()
