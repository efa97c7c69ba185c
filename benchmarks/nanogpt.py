r"""nanoGPT's model and training step, reimplemented faithfully in PyTorch, timed at
nanoGPT's CPU configuration of shakespeare_char, for benchmarks/gpt.py (which runs
this file as a child process: TensorFlow and PyTorch crash in one process). Needs
only NumPy and PyTorch.

    python benchmarks/nanogpt.py TEXT_FILE --seconds=10   # then one line on stdin per measurement
    python benchmarks/nanogpt.py TEXT_FILE --train_steps=2000   # nanoGPT's held-out loss on TEXT_FILE
"""

import argparse
import os
import sys
import time

import numpy as np

CPU = dict(num_layers=4, num_heads=4, hidden_size=128, max_length=64)
BATCH = 12


def timed(run, tokens_per_step, seconds):
    """A `measure()` that runs `run(steps)` for about `seconds`: tokens/s."""
    steps = [5]

    def measure():
        while True:
            tick = time.perf_counter()
            run(steps[0])
            elapsed = time.perf_counter() - tick
            if elapsed >= seconds / 2:
                rate = steps[0] * tokens_per_step / elapsed
                steps[0] = max(5, int(steps[0] * seconds / elapsed))
                return rate
            steps[0] *= 4

    return measure


def _gpt_class(vocab_size):
    """nanoGPT's `GPT` (model.py) at the CPU configuration, for `vocab_size` characters."""
    import math

    import torch
    from torch import nn
    from torch.nn import functional as F

    n_layer, n_head, n_embd, block_size = (
        CPU[k] for k in ("num_layers", "num_heads", "hidden_size", "max_length")
    )
    chars = range(vocab_size)
    bias = False  # nanoGPT's train.py default.

    class LayerNorm(nn.Module):
        def __init__(self, ndim):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

        def forward(self, x):
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
            self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(n_embd, dim=2)
            q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2 = LayerNorm(n_embd), CausalSelfAttention(), LayerNorm(n_embd)
            self.c_fc, self.gelu = nn.Linear(n_embd, 4 * n_embd, bias=bias), nn.GELU()
            self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.c_proj(self.gelu(self.c_fc(self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(len(chars), n_embd), nn.Embedding(block_size, n_embd)
            self.h = nn.ModuleList([Block() for _ in range(n_layer)])
            self.ln_f = LayerNorm(n_embd)
            self.lm_head = nn.Linear(n_embd, len(chars), bias=False)
            self.wte.weight = self.lm_head.weight  # Tied.
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
                    torch.nn.init.normal_(p, mean=0.0, std=std)

        def forward(self, idx, targets):
            pos = torch.arange(0, idx.size(1), dtype=torch.long)
            x = self.wte(idx) + self.wpe(pos)
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)

    return GPT


def trainer(text_path):
    """nanoGPT's train.py on the text at `text_path` (the first 90% its training split):
    (run(steps), held_out(), tokens per step). `run` takes steps at nanoGPT's learning
    rates (100 warm-up steps, then cosine from 1e-3 to 1e-4 at step 2,000); `held_out`
    is the mean loss over every window of the last 10%, as recipes.gpt scores."""
    import math

    import torch

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    block_size = CPU["max_length"]
    raw = open(text_path, "rb").read()
    chars = sorted(set(raw))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in raw], dtype=np.int64)
    train_data, val_data = ids[: int(len(ids) * 0.9)], ids[int(len(ids) * 0.9) :]
    model = _gpt_class(len(chars))()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99))
    iteration = [0]

    def learning_rate(it, warmup=100, decay=2000, top=1e-3, bottom=1e-4):
        if it < warmup:
            return top * (it + 1) / (warmup + 1)
        ratio = min(1.0, (it - warmup) / (decay - warmup))
        return bottom + 0.5 * (1 + math.cos(math.pi * ratio)) * (top - bottom)

    def get_batch():
        ix = torch.randint(len(train_data) - block_size, (BATCH,))
        x = torch.stack([torch.from_numpy(train_data[i : i + block_size]) for i in ix])
        y = torch.stack([torch.from_numpy(train_data[i + 1 : i + 1 + block_size]) for i in ix])
        return x, y

    def run(steps):
        for _ in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(iteration[0])
            x, y = get_batch()
            loss = model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            iteration[0] += 1

    def held_out():
        count = (len(val_data) - 1) // block_size
        windows = np.stack([val_data[i * block_size : (i + 1) * block_size + 1] for i in range(count)])
        model.eval()
        with torch.no_grad():
            tensors = (
                lambda w: (
                    torch.from_numpy(np.ascontiguousarray(w[:, :-1])),  # noqa: E731
                    torch.from_numpy(np.ascontiguousarray(w[:, 1:])),
                )
            )
            parts = np.array_split(windows, max(1, count // 256))
            total = sum(float(model(*tensors(w))) * len(w) for w in parts)
        model.train()
        return total / count

    return run, held_out, BATCH * block_size


def candidate(text_path, seconds):
    """A `measure()` of nanoGPT's training tokens/s on the text at `text_path`."""
    run, _, tokens_per_step = trainer(text_path)
    run(5)
    return timed(run, tokens_per_step, seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("text", help="The text to train on.")
    parser.add_argument("--seconds", type=float, default=10, help="Seconds of one measurement.")
    parser.add_argument(
        "--train_steps",
        type=int,
        default=0,
        help="Train this many steps, then print the held-out loss (nats/char), and exit.",
    )
    args = parser.parse_args()
    if args.train_steps:
        run, held_out, _ = trainer(args.text)
        tick = time.perf_counter()
        run(args.train_steps)
        print(
            f"nanoGPT: {held_out():.4f} nats/char held-out after {args.train_steps} steps, "
            f"{time.perf_counter() - tick:.0f} s"
        )
        return
    measure = candidate(args.text, args.seconds)
    print("ready", flush=True)
    for _ in sys.stdin:
        print(measure(), flush=True)


if __name__ == "__main__":
    main()
