"""The VSE++ PyTorch training step, timed: the baseline of bench_train.py.

    # in an environment of its own; torch is not a vse_tf dependency
    pip install torch numpy
    python -m tools.bench_vsepp_torch

The step of VSE++ (Faghri et al., 2018; github.com/fartashf/vsepp,
model.py) on precomputed features, as its code runs it: EncoderImagePrecomp
(a linear layer from 2048-d features, L2-normalized), EncoderText (300-d word
embeddings over a 10,000-word vocabulary, a one-layer GRU of 1024 over the
packed, length-sorted captions, the last state L2-normalized),
ContrastiveLoss with margin 0.2 and max_violation, Adam at 2e-4 and gradient
norm clipping at 2.0; batch 128, captions of 8 to 20 tokens.
"""

import argparse
import os
import statistics
import time

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torch.nn.utils.rnn import pad_packed_sequence

BATCH, FEATURES, WORDS, WORD_DIM, EMBED = 128, 2048, 10_000, 300, 1024


def l2norm(x):
    return x / x.pow(2).sum(dim=1, keepdim=True).sqrt()


class EncoderImagePrecomp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(FEATURES, EMBED)

    def forward(self, images):
        return l2norm(self.fc(images))


class EncoderText(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(WORDS, WORD_DIM)
        self.rnn = nn.GRU(WORD_DIM, EMBED, 1, batch_first=True)

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(
            self.embed(tokens), lengths, batch_first=True
        )
        out, _ = self.rnn(packed)
        padded, _ = pad_packed_sequence(out, batch_first=True)
        index = (
            (torch.as_tensor(lengths) - 1)
            .view(-1, 1, 1)
            .expand(tokens.size(0), 1, EMBED)
        )
        return l2norm(torch.gather(padded, 1, index).squeeze(1))


def contrastive_loss(im, s, margin=0.2):
    scores = im @ s.t()
    diagonal = scores.diag().view(im.size(0), 1)
    cost_s = (margin + scores - diagonal.expand_as(scores)).clamp(min=0)
    cost_im = (margin + scores - diagonal.t().expand_as(scores)).clamp(min=0)
    mask = torch.eye(scores.size(0), dtype=torch.bool)
    cost_s = cost_s.masked_fill(mask, 0)
    cost_im = cost_im.masked_fill(mask, 0)
    return cost_s.max(1)[0].sum() + cost_im.max(0)[0].sum()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--autocast",
        action="store_true",
        help="the forward pass under torch.autocast "
        "bfloat16 (PyTorch's mixed precision)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image_encoder, text_encoder = EncoderImagePrecomp(), EncoderText()
    params = list(image_encoder.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.Adam(params, lr=2e-4)

    images = torch.randn(BATCH, FEATURES)
    # VSE++'s collate_fn sorts a batch by caption length, longest first.
    lengths = sorted(rng.integers(8, 21, size=BATCH).tolist(), reverse=True)
    tokens = torch.zeros(BATCH, max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        tokens[row, :length] = torch.from_numpy(
            rng.integers(1, WORDS, size=length)
        )

    def step():
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast):
            loss = contrastive_loss(
                image_encoder(images), text_encoder(tokens, lengths)
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 2.0)
        optimizer.step()

    for _ in range(args.warmup):
        step()
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        runs.append((time.perf_counter() - started) / args.steps)
    seconds = statistics.median(runs)
    precision = "autocast bfloat16" if args.autocast else "float32"
    print(
        f"VSE++ precomp step, {precision} (PyTorch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs): "
        f"{1e3 * seconds:.1f} ms/step, {BATCH / seconds:.0f} pairs/s"
    )


if __name__ == "__main__":
    main()
