import numpy as np
import torch

from vae3d.seeding import derive_seed


def test_an_output_index_keeps_the_stream_earlier_outputs_were_drawn_with():
    assert derive_seed(7, 3) == 7 * 1_000_003 + 3
    assert derive_seed(2**40, 5) == (2**40 * 1_000_003 + 5) % (2**63 - 1)


def test_streams_differ_by_purpose_and_position_and_fit_every_generator():
    seeds = {derive_seed(0, purpose, epoch, i) for purpose in ("augment", "corrupt", "order")
             for epoch in range(3) for i in range(50)}
    assert len(seeds) == 3 * 3 * 50
    assert derive_seed(0, "augment", 1) == derive_seed(0, "augment", 1)  # no hidden state
    s = derive_seed(123456789, "noise", 3)
    assert 0 <= s < 2**63 - 1
    torch.Generator().manual_seed(s), np.random.default_rng(s)
